"""Exact attention over an explicit short list of keys per query (token-level random attention).

Scattered single keys are the worst case for tiles: a tile of queries with a few random keys
each touches almost every key tile. Here each query gathers exactly its ``r`` keys instead:
O(N · r · D) work and, in chunks of queries, O(chunk · r · D) memory, forward and backward
(the backward pass recomputes each chunk's probabilities; only the inputs are saved).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_CHUNK_ELEMENTS = 1 << 21  # gathered key elements per chunk (8 MB in fp32)


class _Gather:
    """One chunk of queries [start, stop) with their keys, values and masks gathered."""

    def __init__(self, q: Tensor, k: Tensor, v: Tensor, keys: Tensor, pad: Tensor | None,
                 causal: bool, start: int, stop: int) -> None:
        b, h, n, d = q.shape
        idx = keys[:, start:stop]  # (Hk, C, r), -1 = none
        valid = idx >= 0
        if causal:
            valid &= idx <= torch.arange(start, stop, device=idx.device)[None, :, None]
        safe = idx.clamp(min=0)
        c, r = stop - start, idx.shape[-1]
        # Flat row numbers into k viewed as (B·H·N, D); key lists shared by heads broadcast.
        base = (torch.arange(b, device=q.device)[:, None] * h + torch.arange(h, device=q.device)[None, :]) * n
        self.rows = (base[:, :, None, None] + safe.expand(h, c, r)[None]).reshape(-1)  # (B·H·C·r,)
        self.q = q[:, :, start:stop].reshape(-1, 1, d)
        self.k = k.reshape(-1, d).index_select(0, self.rows).view(b * h * c, r, d)
        self.v = v.reshape(-1, v.shape[-1]).index_select(0, self.rows).view(b * h * c, r, v.shape[-1])
        allowed = valid[None]  # (1, Hk, C, r)
        if pad is not None:
            allowed = allowed & pad[:, safe]  # (B, Hk, C, r)
        allowed = allowed.expand(b, h, c, r)
        zero = torch.zeros((), dtype=q.dtype, device=q.device)
        self.bias = torch.where(allowed, zero, -math.inf).reshape(b * h * c, 1, r)

    def probs(self) -> Tensor:
        scores = torch.baddbmm(self.bias, self.q, self.k.transpose(1, 2))  # (B·H·C, 1, r)
        return torch.ops.aten._safe_softmax(scores, -1)


def _chunks(n: int, r: int, d: int, bh: int):
    step = max(1, _CHUNK_ELEMENTS // max(1, bh * r * d))
    for start in range(0, n, step):
        yield start, min(n, start + step)


class KeyListAttention(torch.autograd.Function):
    """softmax over exactly ``keys[h, i]`` (-1 entries ignored) for every query ``i``."""

    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, keys: Tensor, scale: float, causal: bool):  # type: ignore[override]
        b, h, n, d = q.shape
        qs = q * scale
        out = q.new_empty(b, h, n, v.shape[-1])
        for start, stop in _chunks(n, keys.shape[-1], d, b * h):
            g = _Gather(qs, k, v, keys, key_padding_mask, causal, start, stop)
            out[:, :, start:stop] = torch.bmm(g.probs(), g.v).view(b, h, stop - start, -1)
        ctx.save_for_backward(q, k, v, key_padding_mask, keys)
        ctx.scale, ctx.causal = scale, causal
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, key_padding_mask, keys = ctx.saved_tensors
        b, h, n, d = q.shape
        qs = q * ctx.scale
        # Contiguous gradients (zeros_like would copy the strides of k and v, which are often
        # transposed head views) so that they can be viewed as flat rows for index_add_.
        dq = torch.empty_like(q)
        dk = torch.zeros(k.shape, dtype=k.dtype, device=k.device)
        dv = torch.zeros(v.shape, dtype=v.dtype, device=v.device)
        dk_rows, dv_rows = dk.view(-1, d), dv.view(-1, v.shape[-1])
        for start, stop in _chunks(n, keys.shape[-1], d, b * h):
            g = _Gather(qs, k, v, keys, key_padding_mask, ctx.causal, start, stop)
            probs = g.probs()  # (B·H·C, 1, r)
            do = grad_out[:, :, start:stop].reshape(-1, 1, v.shape[-1])
            dv_rows.index_add_(0, g.rows, torch.bmm(probs.transpose(1, 2), do).reshape(-1, v.shape[-1]))
            ds = torch._softmax_backward_data(torch.bmm(do, g.v.transpose(1, 2)), probs, -1, probs.dtype)
            dq[:, :, start:stop] = torch.bmm(ds, g.k).view(b, h, stop - start, d) * ctx.scale
            dk_rows.index_add_(0, g.rows, torch.bmm(ds.transpose(1, 2), g.q).reshape(-1, d))
        return dq, dk, dv, None, None, None, None


def key_list_attention(q: Tensor, k: Tensor, v: Tensor, keys: Tensor, *, scale: float, causal: bool = False,
                       key_padding_mask: Tensor | None = None) -> Tensor:
    """Self-attention of every query to its listed keys; ``keys`` is (1 or H, N, r), -1 = none."""
    return KeyListAttention.apply(q, k, v, key_padding_mask, keys, scale, causal)
