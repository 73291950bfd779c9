"""Memory-efficient exact attention (Rabe & Staats 2021, "Self-attention does not need O(n²) memory").

The same softmax as dense attention, computed over (query chunk × key chunk) tiles with a running
log-sum-exp, so memory is O(N · chunk) in the forward *and* backward pass. Biases come either as a
tensor broadcastable to (B, H, Nq, Nk) (never expanded to full size) or as a score function
``score_mod(score, b, h, q_idx, kv_idx)`` for biases that would be O(N²) as tensors (ALiBi,
relative-position tables); see :mod:`polyformer.attention.score_mods`.

>>> import torch
>>> from polyformer.attention.memory_efficient import memory_efficient_attention
>>> q = k = v = torch.randn(1, 2, 100, 16)
>>> memory_efficient_attention(q, k, v, causal=True, score_mod="alibi", q_chunk=32, k_chunk=32).shape
torch.Size([1, 2, 100, 16])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from polyformer.attention.kernels.chunked_kernel import ChunkedAttentionFunction, KernelConfig, is_additive
from polyformer.attention.base import AttentionMechanism, check_inputs
from polyformer.attention.registry import register
from polyformer.attention.score_mods import (
    ScoreModSpec,
    captured_leaves,
    check_score_mod_spec,
    resolve_score_mod,
)
from polyformer.errors import ConfigError, ShapeError
from polyformer.options import require

#: Default tile: 256 queries × 512 keys. Small tiles stay in cache and reuse their buffers; the
#: benchmark (benchmarks/memory_efficient.py) measured these as fastest on a 2-core CPU.
DEFAULT_Q_CHUNK = 256
DEFAULT_K_CHUNK = 512

_NAME = "memory_efficient"
_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass
class MemoryEfficientOptions:
    """Options of ``memory_efficient`` attention.

    q_chunk, k_chunk: rows of queries and keys per tile (memory ~ B·H·q_chunk·k_chunk per tile).
    score_mod: a named score function (``"alibi"``, ``"alibi_symmetric"``; serialisable in a model
        config) or a callable ``score_mod(score, b, h, q_idx, kv_idx) -> score`` (programmatic use).
    """

    q_chunk: int = DEFAULT_Q_CHUNK
    k_chunk: int = DEFAULT_K_CHUNK
    score_mod: ScoreModSpec = None

    def __post_init__(self) -> None:
        _check_chunks(self.q_chunk, self.k_chunk, f"attention {_NAME!r}")
        check_score_mod_spec(self.score_mod, f"attention {_NAME!r}")


def _check_chunks(q_chunk: object, k_chunk: object, where: str) -> None:
    for label, value in (("q_chunk", q_chunk), ("k_chunk", k_chunk)):
        require(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"{where}: {label} must be a positive integer (rows per tile), got {value!r}",
        )


def memory_efficient_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    bias: Tensor | None = None,
    score_mod: ScoreModSpec = None,
    scale: float | None = None,
    q_offset: int | None = None,
    q_chunk: int = DEFAULT_Q_CHUNK,
    k_chunk: int = DEFAULT_K_CHUNK,
) -> Tensor:
    """softmax(score_mod(q·kᵀ·scale + bias)) v over the allowed keys, in O(N · chunk) memory.

    Shapes and masking follow the attention protocol (:mod:`polyformer.attention.base`): q
    (B, H, Nq, D), k (B, H, Nk, D), v (B, H, Nk, Dv); ``key_padding_mask`` (B, Nk) True = real
    token; with ``causal`` the queries are the last Nq positions unless ``q_offset`` says otherwise.
    A row with no allowed key gives zeros. float16/bfloat16 inputs are computed in float32.
    """
    key_padding_mask = check_inputs(_NAME, q, k, v, key_padding_mask, bias)
    _check_chunks(q_chunk, k_chunk, "memory_efficient_attention")
    batch, heads, n_q, head_dim = q.shape
    n_k = k.shape[2]
    if q_offset is None:
        q_offset = n_k - n_q if causal else 0
    elif isinstance(q_offset, bool) or not isinstance(q_offset, int):
        raise ConfigError(f"memory_efficient_attention: q_offset must be an int, got {q_offset!r}")
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    dtype = q.dtype
    compute_dtype = torch.float32 if dtype in _LOW_PRECISION else dtype
    q, k, v = (t.to(compute_dtype).contiguous() for t in (q, k, v))
    if bias is not None:
        bias = _bias_4d(bias, compute_dtype)
    mod = resolve_score_mod(score_mod, heads, where="memory_efficient_attention")
    leaves = captured_leaves(mod, batch, heads, compute_dtype, q.device) if mod is not None else []
    config = KernelConfig(
        scale=scale,
        causal=bool(causal),
        q_offset=q_offset,
        q_chunk=min(q_chunk, max(n_q, 1)),
        k_chunk=min(k_chunk, max(n_k, 1)),
        key_padding_mask=key_padding_mask.to(q.device) if key_padding_mask is not None else None,
        score_mod=mod,
        score_mod_is_additive=is_additive(mod, leaves),
    )
    out = ChunkedAttentionFunction.apply(q, k, v, bias, config, *leaves)  # (B, H, Nq, Dv)
    return out.to(dtype)


def _bias_4d(bias: Tensor, dtype: torch.dtype) -> Tensor:
    """The bias as a 4-D view (leading dims of size 1 added), in the compute dtype."""
    if not bias.is_floating_point():
        raise ShapeError(
            f"attention {_NAME!r}: bias must be a floating-point additive bias, got {bias.dtype}; "
            "for a boolean mask use key_padding_mask, causal, or bias.float().masked_fill(~mask, -inf)"
        )
    if bias.dim() > 4:
        raise ShapeError(
            f"attention {_NAME!r}: bias must have at most 4 dimensions (batch, heads, queries, keys), "
            f"got shape {tuple(bias.shape)}"
        )
    return bias.to(dtype).reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))


@register
class MemoryEfficientAttention(AttentionMechanism):
    """Exact attention in O(N · chunk) memory, with a tensor bias and/or a score function.

    A per-call ``score_mod`` is applied after the one in the options (when both are given).
    """

    name = _NAME
    Options = MemoryEfficientOptions
    supports_bias = True
    supports_score_mod = True

    def dense_mask(self, n_q: int, n_k: int, n_heads: int, q_offset: int, device: torch.device) -> None:
        """Every key is allowed (before causality and padding)."""
        return None

    def resolve_score_mod(self, score_mod, n_heads: int):
        """The options' score function followed by the call's (either may be None)."""
        where = f"attention {_NAME!r}"
        configured = resolve_score_mod(self.options.score_mod, n_heads, where=where)
        call = resolve_score_mod(score_mod, n_heads, where=where)
        if configured is None or call is None:
            return call if configured is None else configured

        def chained(score, b, h, q_idx, kv_idx):
            return call(configured(score, b, h, q_idx, kv_idx), b, h, q_idx, kv_idx)

        return chained

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, scale, q_offset, score_mod=None) -> Tensor:
        options: MemoryEfficientOptions = self.options
        return memory_efficient_attention(
            q, k, v, causal=causal, key_padding_mask=key_padding_mask, bias=bias,
            score_mod=self.resolve_score_mod(score_mod, q.shape[1]), scale=scale, q_offset=q_offset,
            q_chunk=options.q_chunk, k_chunk=options.k_chunk,
        )
