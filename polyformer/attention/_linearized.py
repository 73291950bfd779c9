"""The base class of mechanisms defined by a feature map (``linear``, ``performer``).

A subclass only says how to turn ``q`` and ``k`` into non-negative features; this class runs the
parallel form (:func:`kernelized_attention`) and the recurrent form used for decoding, where a
per-layer :class:`RecurrentState` of size O(F·Dv) replaces the growing key/value cache.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from polyformer.attention._kernelized import RecurrentState, kernelized_attention, new_key_mask
from polyformer.attention.base import AttentionCache, AttentionMechanism, check_inputs
from polyformer.errors import ShapeError


class LinearizedAttention(AttentionMechanism):
    """Attention ``out_i = Σ_j φ(q_i)ᵀφ(k_j) v_j / Σ_j φ(q_i)ᵀφ(k_j)``; subclasses define φ.

    16-bit inputs are computed in float32 (the running sums lose too much precision otherwise) and
    the output is cast back.
    """

    #: whether the keys' features carry a stabiliser ``exp(-log_scale)`` that decoding must track
    tracks_key_scale: ClassVar[bool] = False

    # -- what a subclass provides -----------------------------------------------------------------
    def feature_pair(
        self,
        q: Tensor,
        k: Tensor,
        key_mask: Tensor | None,
        scale: float,
        previous_log_scale: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(φ(q), φ(k), log_scale)``: (B, H, Nq, F), (B, H, Nk, F) with padded keys zeroed.

        ``log_scale`` (B, H) is the stabiliser the key features were divided by (as
        ``exp(-log_scale)``), or None. When decoding, ``previous_log_scale`` is the stabiliser of
        the cached state, and the returned one must be at least as large.
        """
        raise NotImplementedError

    def cache_owner(self) -> object:
        """A token that changes whenever features change (a cache made before is then stale)."""
        return None

    @property
    def chunk_size(self) -> int:
        return int(self.options.chunk_size)

    # -- the parallel form -------------------------------------------------------------------------
    def attend(self, q, k, v, *, causal, key_padding_mask, bias, scale, q_offset) -> Tensor:
        dtype = q.dtype
        q, k, v = _compute_dtype(q, k, v)
        phi_q, phi_k, _ = self.feature_pair(q, k, key_padding_mask, scale)  # (B, H, N, F)
        out = kernelized_attention(
            phi_q, phi_k, v, causal=causal, q_offset=q_offset, chunk_size=self.chunk_size
        )
        return out.to(dtype)  # type: ignore[union-attr]

    # -- the recurrent form ------------------------------------------------------------------------
    def new_cache(self) -> AttentionCache:
        """A running state ``S = Σ φ(k)[v, 1]ᵀ`` per batch row and head: O(1) in length."""
        return RecurrentState()

    def forward_cached(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cache: AttentionCache,
        key_padding_mask: Tensor | None = None,
        *,
        scale: float | None = None,
    ) -> Tensor:
        """Causal attention of ``T`` new positions to themselves and the state; updates the state.

        ``key_padding_mask`` is (B, len(cache) + T); only its last ``T`` columns are read, since
        padded past keys never entered the state.
        """
        if not isinstance(cache, RecurrentState):
            raise TypeError(
                f"attention {self.name!r} expects the RecurrentState from its new_cache(), "
                f"got {type(cache).__name__}"
            )
        check_inputs(self.name, q, k, v, None)
        if q.shape[-2] != k.shape[-2]:
            raise ShapeError(
                f"attention {self.name!r}: forward_cached takes the same new positions as queries "
                f"and keys, got {q.shape[-2]} queries and {k.shape[-2]} keys"
            )
        key_mask = new_key_mask(self.name, key_padding_mask, len(cache), k)
        if scale is None:
            scale = 1.0 / math.sqrt(q.shape[-1])
        dtype = q.dtype
        q, k, v = _compute_dtype(q, k, v)
        phi_q, phi_k, log_scale = self.feature_pair(q, k, key_mask, scale, cache.log_scale)
        owner = self.cache_owner()
        if cache.state is not None and cache.owner != owner:
            raise ShapeError(
                f"attention {self.name!r}: the features changed (redrawn) since this cache was "
                "started; start a new cache with new_cache()"
            )
        state0 = cache.state
        if state0 is not None and log_scale is not None and cache.log_scale is not None:
            # The stabiliser grew: bring the old sums to the new scale (exact, like online softmax).
            old = cache.log_scale
            factor = torch.where(torch.isfinite(old), torch.exp(old - log_scale), torch.zeros_like(old))
            state0 = state0 * factor[..., None, None]
        out, state = kernelized_attention(
            phi_q, phi_k, v, causal=True, q_offset=0, chunk_size=self.chunk_size,
            initial_state=state0, return_state=True,
        )
        cache.state, cache.log_scale, cache.owner = state, log_scale, owner
        cache.advance(k.shape[-2])
        return out.to(dtype)  # type: ignore[union-attr]


def _compute_dtype(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Float32 for 16-bit inputs, else unchanged."""
    if tensors[0].dtype in (torch.float16, torch.bfloat16):
        return tuple(t.float() for t in tensors)
    return tensors


def zero_padded_keys(phi_k: Tensor, key_mask: Tensor | None) -> Tensor:
    """Features of padded keys set to 0, so they add nothing to any sum."""
    if key_mask is None:
        return phi_k
    return phi_k.masked_fill(~key_mask[:, None, :, None], 0.0)
