"""Small models for the task tests, importable as ``module:function`` model families.

``mlp_classifier`` is a plain classifier over feature vectors (it returns ``.logits`` like a
``*ForSequenceClassification`` model); ``hf_bert_mlm`` is a tiny random Hugging Face
``BertForMaskedLM`` — the reference the masked-LM task is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from polyformer.train.examples import ExampleSet


@dataclass
class Logits:
    logits: torch.Tensor


class MLPClassifier(nn.Module):
    def __init__(self, features: int, classes: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, classes))

    def forward(self, features: torch.Tensor) -> Logits:
        return Logits(self.net(features))


def mlp_classifier(config: dict, num_classes: int) -> MLPClassifier:
    return MLPClassifier(config.get("features", 2), num_classes, config.get("hidden", 16))


def hf_bert_mlm(config: dict, vocab_size: int) -> nn.Module:
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(BertConfig(vocab_size=vocab_size, hidden_size=config.get("d_model", 32),
                                      num_hidden_layers=config.get("n_layers", 1), num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=64,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def blobs(n: int, seed: int, classes: int = 4, spread: float = 0.35) -> ExampleSet:
    """``classes`` Gaussian blobs around the corners of a square: separable up to their overlap
    (with spread 0.35 and centres 2 apart, a point crosses a boundary with probability ~0.2%)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float32)[:classes]
    labels = rng.integers(0, classes, size=n)
    points = centres[labels] + spread * rng.standard_normal((n, 2)).astype(np.float32)
    return ExampleSet({"features": torch.from_numpy(points)}, torch.from_numpy(labels).long())
