"""The explicit reference: softmax over exactly the allowed keys, written out step by step.

Every mechanism is tested against :func:`reference_attention`. It materialises the full
(B, H, Nq, Nk) score matrix, so it is for tests and pictures, not for long inputs.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

#: ``score_mod(score, b, h, q_idx, kv_idx) -> score`` (see :mod:`polyformer.attention.score_mods`)
ScoreFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def causal_mask(n_q: int, n_k: int, q_offset: int, device: torch.device | None = None) -> Tensor:
    """(Nq, Nk) bool: query i (at position q_offset + i) may see key j iff j <= q_offset + i."""
    rows = torch.arange(n_q, device=device)[:, None] + q_offset
    return torch.arange(n_k, device=device)[None, :] <= rows


def combine_masks(
    n_q: int,
    n_k: int,
    *,
    allowed: Tensor | None = None,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    q_offset: int | None = None,
    device: torch.device | None = None,
) -> Tensor | None:
    """One boolean mask, broadcastable to (B, H, Nq, Nk), from a pattern, causality and padding.

    ``allowed`` is (Nq, Nk), (H, Nq, Nk) or (B, H, Nq, Nk), True = attend. Returns None when
    nothing is masked.
    """
    mask = allowed
    if causal:
        offset = n_k - n_q if q_offset is None else q_offset
        c = causal_mask(n_q, n_k, offset, device)
        mask = c if mask is None else mask & c
    if key_padding_mask is not None:
        kpm = key_padding_mask.bool()[:, None, None, :]
        mask = kpm if mask is None else mask & kpm
    return mask


def score_indices(
    batch: int, heads: int, n_q: int, n_k: int, q_offset: int, device: torch.device | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Index tensors ``b, h, q_idx, kv_idx`` of a whole (B, H, Nq, Nk) score matrix for a score function.

    ``q_idx`` holds query *positions* (``q_offset`` + row), as in :mod:`polyformer.attention.score_mods`.
    """
    b = torch.arange(batch, device=device).view(-1, 1, 1, 1)
    h = torch.arange(heads, device=device).view(1, -1, 1, 1)
    q_idx = (torch.arange(n_q, device=device) + q_offset).view(1, 1, -1, 1)
    kv_idx = torch.arange(n_k, device=device).view(1, 1, 1, -1)
    return b, h, q_idx, kv_idx


def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """softmax over the last axis restricted to ``mask`` (True = allowed); rows with no key are zeros."""
    if mask is None:
        return torch.softmax(scores, dim=-1)
    mask = mask.expand_as(scores)
    has_key = mask.any(dim=-1, keepdim=True)
    # Empty rows get finite scores so softmax stays NaN-free; their probabilities are zeroed below.
    scores = scores.masked_fill(~mask, float("-inf")).masked_fill(~has_key, 0.0)
    return torch.softmax(scores, dim=-1) * has_key


def attention_probabilities(
    q: Tensor,
    k: Tensor,
    *,
    allowed: Tensor | None = None,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    bias: Tensor | None = None,
    score_mod: ScoreFn | None = None,
    scale: float | None = None,
    q_offset: int | None = None,
) -> Tensor:
    """The (B, H, Nq, Nk) matrix softmax(score_mod(q kᵀ · scale + bias)) over the allowed keys.

    ``score_mod`` is a callable ``score_mod(score, b, h, q_idx, kv_idx)``; masked keys get
    probability 0 and a query with no allowed key a row of zeros.
    """
    n_q, n_k = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    offset = (n_k - n_q if causal else 0) if q_offset is None else q_offset
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (B, H, Nq, Nk)
    if bias is not None:
        scores = scores + bias
    if score_mod is not None:
        scores = score_mod(scores, *score_indices(q.shape[0], q.shape[1], n_q, n_k, offset, q.device))
    mask = combine_masks(
        n_q, n_k, allowed=allowed, causal=causal, key_padding_mask=key_padding_mask,
        q_offset=offset, device=q.device,
    )
    return masked_softmax(scores, mask)


def reference_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    allowed: Tensor | None = None,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    bias: Tensor | None = None,
    score_mod: ScoreFn | None = None,
    scale: float | None = None,
    q_offset: int | None = None,
) -> Tensor:
    """softmax(score_mod(q kᵀ · scale + bias)) v over the allowed keys; rows with no allowed key give zeros."""
    probs = attention_probabilities(
        q, k, allowed=allowed, causal=causal, key_padding_mask=key_padding_mask, bias=bias,
        score_mod=score_mod, scale=scale, q_offset=q_offset,
    )
    return torch.matmul(probs, v)
