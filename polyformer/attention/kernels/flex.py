"""PyTorch's compiled FlexAttention as a backend for pattern-based mechanisms.

On CPU, FlexAttention runs compiled and forward-only (tensors that require grad raise), so it is
offered for inference and as a benchmark reference; training uses polyformer's own kernel.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from polyformer.attention.patterns import Pattern
from polyformer.errors import ConfigError


@lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_block_mask(pattern: Pattern, n: int, n_heads: int, causal: bool, key_padding_mask: Tensor | None,
                    device: torch.device):
    """FlexAttention's BlockMask of ``pattern`` (and causality, padding) at length ``n``."""
    from torch.nn.attention.flex_attention import create_block_mask

    pattern_mask = pattern.as_mask_mod(n, n_heads)

    def mask_mod(b, h, q_idx, kv_idx):
        allowed = pattern_mask(b, h, q_idx, kv_idx)
        if causal:
            allowed = allowed & (kv_idx <= q_idx)
        if key_padding_mask is not None:
            allowed = allowed & key_padding_mask[b, kv_idx]
        return allowed

    batch = None if key_padding_mask is None else key_padding_mask.shape[0]
    heads = None if pattern.heads(n_heads) == 1 else n_heads
    return create_block_mask(mask_mod, batch, heads, n, n, device=device)


def flex_pattern_attention(pattern: Pattern, q: Tensor, k: Tensor, v: Tensor, *, causal: bool,
                           key_padding_mask: Tensor | None, scale: float, block_mask=None) -> Tensor:
    """Self-attention restricted to ``pattern`` with compiled FlexAttention (forward only on CPU)."""
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise ConfigError(
            "backend='flex' is forward-only on CPU (FlexAttention cannot compute gradients there); "
            "use backend='kernel' or 'auto' for training, or run under torch.no_grad()"
        )
    if q.shape[-2] != k.shape[-2]:
        raise ConfigError("backend='flex' computes self-attention only; use backend='dense' for cross-attention")
    n = q.shape[-2]
    if block_mask is None:
        block_mask = flex_block_mask(pattern, n, q.shape[1], causal, key_padding_mask, q.device)
    out = _compiled_flex()(q, k, v, block_mask=block_mask, scale=scale)
    return out
