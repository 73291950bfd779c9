"""Choosing the next token: greedy, or sampling after temperature, top-k and top-p filters.

The filters follow Hugging Face's logits warpers (temperature, then top-k, then top-p), so the
same settings keep the same candidate tokens. Sampling draws from a ``torch.Generator``, which
makes a seeded run reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from polyformer.options import require


@dataclass
class SamplingOptions:
    """``do_sample`` False = greedy (argmax); otherwise sample after the filters.

    ``temperature`` divides the logits (> 0); ``top_k`` keeps the k most likely tokens (None =
    all); ``top_p`` keeps the smallest set of most likely tokens whose probability reaches p
    (None or 1.0 = all).
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        require(isinstance(self.do_sample, bool), f"do_sample must be true or false, got {self.do_sample!r}")
        require(isinstance(self.temperature, (int, float)) and self.temperature > 0,
                f"temperature must be a number > 0 (1.0 = unchanged; for greedy use do_sample=False), "
                f"got {self.temperature!r}")
        require(self.top_k is None or (isinstance(self.top_k, int) and self.top_k >= 1),
                f"top_k must be an integer >= 1 or None, got {self.top_k!r}")
        require(self.top_p is None or (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1),
                f"top_p must be in (0, 1] or None, got {self.top_p!r}")


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature`` (unchanged for 1.0)."""
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """(B, V) logits with everything below the k-th largest of each row set to -inf."""
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """(B, V) logits keeping the most likely tokens whose total probability first reaches ``p``.

    The most likely token is always kept.
    """
    if p >= 1.0:
        return logits
    ascending, order = torch.sort(logits, dim=-1)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)  # (B, V) mass of this token and all below
    drop_sorted = cumulative <= 1 - p
    drop_sorted[..., -1] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(logits: Tensor, options: SamplingOptions) -> Tensor:
    """Temperature, then top-k, then top-p (Hugging Face's order)."""
    logits = apply_temperature(logits, options.temperature)
    if options.top_k is not None:
        logits = top_k_filter(logits, options.top_k)
    if options.top_p is not None:
        logits = top_p_filter(logits, options.top_p)
    return logits


def choose_next(logits: Tensor, options: SamplingOptions, generator: torch.Generator | None = None) -> Tensor:
    """(B, V) next-token logits -> (B,) token ids, greedy or sampled."""
    if not options.do_sample:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits.float(), options).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
