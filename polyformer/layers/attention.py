"""Multi-head self- and cross-attention around any registered attention mechanism.

The layers project inputs to heads, apply rotary angles when given, and hand ``q, k, v`` of shape
(B, H, N, D) to the mechanism through the protocol of :mod:`polyformer.attention.base` only, so
every registered mechanism works in every model. Decoding state lives in the mechanism's own cache
(``mechanism.new_cache()``), never in a cache type assumed here.
"""

from __future__ import annotations

from torch import Tensor, nn

from polyformer.attention import AttentionCache, AttentionSpec
from polyformer.errors import ShapeError
from polyformer.layers.rotary import RotaryAngles


class _HeadProjections(nn.Module):
    """``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` and the mechanism, shared by both layers."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        *,
        attention: AttentionSpec | str | dict | None = None,
        qkv_bias: bool = True,
        out_bias: bool = True,
        scale: float | None = None,
        kv_dim: int | None = None,
    ) -> None:
        super().__init__()
        if head_dim is None:
            if d_model % n_heads:
                raise ShapeError(
                    f"d_model ({d_model}) is not divisible by n_heads ({n_heads}); pass head_dim"
                )
            head_dim = d_model // n_heads
        self.n_heads, self.head_dim, self.scale = n_heads, head_dim, scale
        inner, kv_dim = n_heads * head_dim, kv_dim or d_model
        self.q_proj = nn.Linear(d_model, inner, bias=qkv_bias)
        self.k_proj = nn.Linear(kv_dim, inner, bias=qkv_bias)
        self.v_proj = nn.Linear(kv_dim, inner, bias=qkv_bias)
        self.out_proj = nn.Linear(inner, d_model, bias=out_bias)
        self.mechanism = AttentionSpec.coerce(attention).build()

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, N, H*D) -> (B, H, N, D)."""
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: Tensor) -> Tensor:
        """(B, H, N, D) -> (B, N, H*D)."""
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)


class MultiHeadAttention(_HeadProjections):
    """Self-attention: ``out_proj(mechanism(q_proj x, k_proj x, v_proj x))`` with optional rotary.

    ``scale`` multiplies the scores (None = 1/sqrt(head_dim); GPT-Neo uses 1.0).
    """

    def forward(
        self,
        x: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        rotary: RotaryAngles | None = None,
        cache: AttentionCache | None = None,
    ) -> Tensor:
        """(B, N, d_model) -> (B, N, d_model).

        With ``cache`` (from ``self.mechanism.new_cache()``), ``x`` holds only new positions: they
        attend causally to the cached ones and to themselves, and the cache is updated. Then
        ``key_padding_mask`` covers past and new keys, (B, len(cache) + N).
        """
        q = self.split_heads(self.q_proj(x))  # (B, H, N, D)
        k = self.split_heads(self.k_proj(x))
        v = self.split_heads(self.v_proj(x))
        if rotary is not None:
            q, k = rotary.apply(q), rotary.apply(k)
        if cache is None:
            out = self.mechanism(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=self.scale)
        else:
            if not causal:
                raise ShapeError(
                    "MultiHeadAttention: a decoding cache needs causal attention (new positions "
                    "cannot be seen by earlier ones); run non-causal layers without a cache"
                )
            out = self.mechanism.forward_cached(q, k, v, cache, key_padding_mask, scale=self.scale)
        return self.out_proj(self.merge_heads(out))  # (B, N, d_model)


class CrossAttentionCache:
    """Projected keys/values of the attended-to states (and their padding mask), computed once.

    A decoder reads the same encoder states at every step, so projecting them again would waste
    ``O(M · d²)`` per step.
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.padding_mask: Tensor | None = None

    @property
    def filled(self) -> bool:
        return self.k is not None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]


class CrossAttention(_HeadProjections):
    """Queries from ``x``, keys and values from ``context`` (encoder states or another modality).

    Non-causal; no rotary (the two sequences do not share positions). ``kv_dim`` is the width of
    ``context`` when it differs from ``d_model``.
    """

    def forward(
        self,
        x: Tensor,
        context: Tensor | None,
        *,
        context_padding_mask: Tensor | None = None,
        cache: CrossAttentionCache | None = None,
    ) -> Tensor:
        """(B, N, d_model) attending to (B, M, kv_dim) -> (B, N, d_model).

        With a filled ``cache`` the stored keys/values (and padding mask) are used and ``context``
        may be None; an empty cache is filled from ``context`` on the first call.
        """
        if cache is not None and cache.filled:
            k, v, mask = cache.k, cache.v, cache.padding_mask
        else:
            if context is None:
                raise ShapeError(
                    "cross-attention needs the states to attend to: pass encoder_states (only "
                    "later decoding steps with a filled cache may omit them)"
                )
            k = self.split_heads(self.k_proj(context))  # (B, H, M, D)
            v = self.split_heads(self.v_proj(context))
            mask = context_padding_mask
            if cache is not None:
                cache.k, cache.v, cache.padding_mask = k, v, mask
        q = self.split_heads(self.q_proj(x))  # (B, H, N, D)
        out = self.mechanism(q, k, v, causal=False, key_padding_mask=mask, scale=self.scale)
        return self.out_proj(self.merge_heads(out))  # (B, N, d_model)
