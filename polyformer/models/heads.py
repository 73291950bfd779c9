"""Task heads and losses shared by every family (classification, tokens, spans, masked words).

The heads are BERT's, written once so that every BERT-like family (TAPAS, VisualBERT, LXMERT,
LayoutLM, ...) composes them: :class:`Pooler` (tanh of the first token), :class:`MaskedLMHead`
(transform, then a decoder tied to the word embeddings, plus its own bias) and :class:`SpanHead`
(start and end scores of an answer span). Losses follow Hugging Face's rules exactly, so a loss
computed here equals the one ``transformers`` reports for the same logits and labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyformer.errors import ConfigError
from polyformer.layers.activations import build_activation
from polyformer.layers.norms import LayerNorm

__all__ = [
    "IGNORE_INDEX",
    "PROBLEM_TYPES",
    "MaskedLMHead",
    "Pooler",
    "PredictionTransform",
    "SpanHead",
    "classification_loss",
    "span_loss",
    "token_cross_entropy",
]

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
#: label value that token-level losses skip (padding, sub-words, unmasked positions)
IGNORE_INDEX = -100


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------
def classification_loss(logits: Tensor, labels: Tensor, problem_type: str | None) -> Tensor:
    """Hugging Face's rule: regression (MSE) for one output, cross-entropy for integer labels, else BCE."""
    num_labels = logits.shape[-1]
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int32, torch.int16, torch.uint8):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.float().reshape(logits.shape[:-1]))
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.float(), labels.reshape(-1).long())
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def token_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over every position whose label is not ``IGNORE_INDEX`` (-100).

    ``logits`` (..., C), ``labels`` (...): token classification (C = labels) and masked language
    modelling (C = vocabulary) both use it.
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).long(),
                           ignore_index=IGNORE_INDEX)


def span_loss(start_logits: Tensor, end_logits: Tensor, start_positions: Tensor, end_positions: Tensor) -> Tensor:
    """Extractive QA: the mean of the start and end cross-entropies over (B, N) scores.

    As in Hugging Face, positions outside the sequence (an answer truncated away) are clamped to
    ``N`` and then ignored, so such examples add nothing to the loss.
    """
    length = start_logits.shape[1]
    start = start_positions.reshape(-1).long().clamp(0, length)
    end = end_positions.reshape(-1).long().clamp(0, length)
    start_loss = F.cross_entropy(start_logits.float(), start, ignore_index=length)
    end_loss = F.cross_entropy(end_logits.float(), end, ignore_index=length)
    return (start_loss + end_loss) / 2


# ------------------------------------------------------------------------------------------------
# Heads
# ------------------------------------------------------------------------------------------------
class Pooler(nn.Module):
    """``tanh(dense(first token))``: BERT's summary of a sequence, (B, N, d) -> (B, d)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class PredictionTransform(nn.Module):
    """``norm(activation(dense(h)))``: the step before the vocabulary projection of a masked-LM head."""

    def __init__(self, d_model: int, activation: str, norm_eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.activation = build_activation(activation)
        self.norm = LayerNorm(d_model, eps=norm_eps)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.norm(self.activation(self.dense(hidden)))


class MaskedLMHead(nn.Module):
    """Masked-word scores: a transform, then the vocabulary projection plus a per-word ``bias``.

    With ``tied=True`` (BERT's default) the projection is the word-embedding matrix passed to
    :meth:`forward`, so there is one copy of it; with ``tied=False`` the head owns ``decoder``.
    """

    def __init__(self, d_model: int, vocab_size: int, activation: str, norm_eps: float, tied: bool = True) -> None:
        super().__init__()
        self.transform = PredictionTransform(d_model, activation, norm_eps)
        self.decoder = None if tied else nn.Linear(d_model, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: Tensor, word_embeddings: Tensor | None = None) -> Tensor:
        """(B, N, d) -> (B, N, vocab); ``word_embeddings`` (vocab, d) is needed when tied."""
        weight = word_embeddings if self.decoder is None else self.decoder.weight
        if weight is None:
            raise ConfigError("MaskedLMHead is tied to the word embeddings: pass their matrix to forward")
        return F.linear(self.transform(hidden), weight, self.bias)


class SpanHead(nn.Linear):
    """Extractive QA: one linear map to two scores per token, split into start and end logits."""

    def __init__(self, d_model: int) -> None:
        super().__init__(d_model, 2)

    def forward(self, hidden: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """(B, N, d) -> start (B, N), end (B, N)."""
        start, end = super().forward(hidden).unbind(-1)
        return start.contiguous(), end.contiguous()
