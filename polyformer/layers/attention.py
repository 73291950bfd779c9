"""Multi-head self- and cross-attention around any registered attention mechanism.

The layers project inputs to heads, apply rotary angles when given, and hand ``q, k, v`` of shape
(B, H, N, D) to the mechanism through the protocol of :mod:`polyformer.attention.base` only, so
every registered mechanism works in every model. Decoding state lives in the mechanism's own cache
(``mechanism.new_cache()``), never in a cache type assumed here.

Both layers take an additive ``attention_bias`` (broadcastable to (B, H, Nq, Nk); mechanisms with
``supports_bias``), a per-call ``score_mod`` (mechanisms with ``supports_score_mod``) and
``output_attentions=True``, which returns ``(output, probabilities)`` with the (B, H, Nq, Nk)
probabilities of mechanisms that have them (others raise ConfigError naming those that do).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from polyformer.attention import AttentionCache, AttentionSpec, KVCache
from polyformer.errors import ConfigError, ShapeError
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

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool,
        key_padding_mask: Tensor | None,
        bias: Tensor | None,
        score_mod: Any,
        output_attentions: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """The mechanism's output (B, H, Nq, Dv) and, when asked, its probabilities (B, H, Nq, Nk)."""
        if output_attentions:
            # The output is computed from the same probabilities, so the two always agree.
            probs = self.mechanism.attention_probabilities(
                q, k, causal, key_padding_mask, bias=bias, score_mod=score_mod, scale=self.scale,
            )
            return torch.matmul(probs.to(v.dtype), v), probs
        out = self.mechanism(
            q, k, v, causal=causal, key_padding_mask=key_padding_mask, bias=bias,
            score_mod=score_mod, scale=self.scale,
        )
        return out, None


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
        attention_bias: Tensor | None = None,
        score_mod: Any = None,
        output_attentions: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """(B, N, d_model) -> (B, N, d_model); with ``output_attentions``, also (B, H, N, N_keys).

        With ``cache`` (from ``self.mechanism.new_cache()``), ``x`` holds only new positions: they
        attend causally to the cached ones and to themselves, and the cache is updated. Then
        ``key_padding_mask`` covers past and new keys, (B, len(cache) + N), and so does the last
        axis of ``attention_bias``.
        """
        q = self.split_heads(self.q_proj(x))  # (B, H, N, D)
        k = self.split_heads(self.k_proj(x))
        v = self.split_heads(self.v_proj(x))
        if rotary is not None:
            q, k = rotary.apply(q), rotary.apply(k)
        probs = None
        if cache is None:
            out, probs = self.attend(
                q, k, v, causal=causal, key_padding_mask=key_padding_mask, bias=attention_bias,
                score_mod=score_mod, output_attentions=output_attentions,
            )
        else:
            if not causal:
                raise ShapeError(
                    "MultiHeadAttention: a decoding cache needs causal attention (new positions "
                    "cannot be seen by earlier ones); run non-causal layers without a cache"
                )
            if output_attentions:
                if not isinstance(cache, KVCache):
                    raise ConfigError(
                        f"output_attentions while decoding needs a key/value cache; attention "
                        f"{self.mechanism.name!r} keeps a {type(cache).__name__}"
                    )
                k_all, v_all = cache.append(k, v)
                out, probs = self.attend(
                    q, k_all, v_all, causal=True, key_padding_mask=key_padding_mask,
                    bias=attention_bias, score_mod=score_mod, output_attentions=True,
                )
            else:
                # Recurrent mechanisms have their own forward_cached without these keywords.
                extra: dict[str, Any] = {}
                if attention_bias is not None:
                    extra["bias"] = attention_bias
                if score_mod is not None:
                    extra["score_mod"] = score_mod
                out = self.mechanism.forward_cached(q, k, v, cache, key_padding_mask, scale=self.scale, **extra)
        out = self.out_proj(self.merge_heads(out))  # (B, N, d_model)
        return (out, probs) if output_attentions else out


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
        attention_bias: Tensor | None = None,
        score_mod: Any = None,
        output_attentions: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """(B, N, d_model) attending to (B, M, kv_dim) -> (B, N, d_model).

        ``context_padding_mask`` (B, M), True = real context token. With a filled ``cache`` the
        stored keys/values (and padding mask) are used and ``context`` may be None; an empty cache
        is filled from ``context`` on the first call. ``output_attentions`` also returns the
        (B, H, N, M) probabilities.
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
        if mask is not None and tuple(mask.shape) != (x.shape[0], k.shape[-2]):
            raise ShapeError(
                f"cross-attention: the padding mask of the attended states must be (batch, "
                f"context length) = {(x.shape[0], k.shape[-2])}, got {tuple(mask.shape)}"
            )
        q = self.split_heads(self.q_proj(x))  # (B, H, N, D)
        out, probs = self.attend(
            q, k, v, causal=False, key_padding_mask=mask, bias=attention_bias, score_mod=score_mod,
            output_attentions=output_attentions,
        )
        out = self.out_proj(self.merge_heads(out))  # (B, N, d_model)
        return (out, probs) if output_attentions else out
