"""A tiny causal language model for trainer tests, built from the transformer core.

It follows the trainer's model protocol (``forward(input_ids=..., labels=...)`` returns ``.loss``,
the next-token loss shifted inside the model) without depending on a model family. Used by
subprocess tests as the factory ``_tiny_lm:build`` (the tests folder is put on PYTHONPATH).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from polyformer.layers import LearnedPositions, TokenEmbedding
from polyformer.transformer import Decoder, TransformerConfig, default_position_ids


@dataclass
class Output:
    logits: torch.Tensor
    loss: torch.Tensor | None


class TinyLM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int = 32, n_heads: int = 2, n_layers: int = 2,
                 n_positions: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        config = TransformerConfig(d_model=d_model, n_heads=n_heads, n_layers=n_layers, dropout=dropout)
        self.wte = TokenEmbedding(vocab_size, d_model)
        self.wpe = LearnedPositions(n_positions, d_model)
        self.decoder = Decoder(config)
        nn.init.normal_(self.wte.weight, std=0.02)  # N(0, 1) tied logits would start far from uniform

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, attention_mask=None) -> Output:
        position_ids = default_position_ids(*input_ids.shape, past=0, device=input_ids.device)
        h = self.wte(input_ids) + self.wpe(position_ids)  # (B, T, d)
        logits = self.wte.logits(self.decoder(h, key_padding_mask=attention_mask))  # (B, T, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1))
        return Output(logits, loss)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Like the GPT family: token and position tables are the embeddings (Kaplan et al.'s N)."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.wte.weight.numel() + sum(p.numel() for p in self.wpe.parameters())
        return total


def build(config: dict, vocab_size: int) -> TinyLM:
    return TinyLM(vocab_size, **config)


def build_sized(config: dict, vocab_size: int) -> TinyLM:
    """The factory a sweep calls: GPT-style size names (n_layers, d_model, n_heads)."""
    return TinyLM(vocab_size, d_model=config["d_model"], n_heads=config["n_heads"], n_layers=config["n_layers"],
                  n_positions=config.get("n_positions", 64))
