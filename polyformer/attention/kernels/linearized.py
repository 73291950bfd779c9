"""The base class of mechanisms defined by a feature map (``linear``, ``performer``).

A subclass only says how to turn queries and keys into non-negative features; this class runs

* the non-causal form, streaming keys and queries in blocks so that the (N, F) feature tensors
  never exist at once (the state ``Σ φ(k)[v, 1]ᵀ`` is all that is kept);
* the causal form, the chunked algorithm of :func:`kernelized_attention`;
* the recurrent form used for decoding, where a per-layer :class:`RecurrentState` of size
  O(F·Dv) replaces the growing key/value cache.

Key features may carry a stabiliser: ``φ(k) = exp(logit − log_scale)`` with one ``log_scale``
per (batch, head) (the Performer). Streaming and decoding then keep a running maximum and
rescale the state when it grows, exactly like online softmax; any constant cancels in the ratio.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from polyformer.attention.kernels.kernelized import (
    RecurrentState,
    append_ones,
    divide_by_normaliser,
    kernelized_attention,
    key_state,
    new_key_mask,
)
from polyformer.attention.base import AttentionCache, AttentionMechanism, check_inputs
from polyformer.errors import ShapeError

#: Feature elements (B·H·block·F) per block of the streamed non-causal form.
_STREAM_BLOCK_ELEMENTS = 1 << 22


class LinearizedAttention(AttentionMechanism):
    """Attention ``out_i = Σ_j φ(q_i)ᵀφ(k_j) v_j / Σ_j φ(q_i)ᵀφ(k_j)``; subclasses define φ.

    16-bit inputs are computed in float32 (the running sums lose too much precision otherwise) and
    the output is cast back.
    """

    # -- what a subclass provides -----------------------------------------------------------------
    def query_features(self, q: Tensor, scale: float) -> Tensor:
        """φ(q): (B, H, N, D) -> (B, H, N, F), any positive per-row factor allowed."""
        raise NotImplementedError

    def key_features(
        self, k: Tensor, key_mask: Tensor | None, scale: float, previous_log_scale: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """``(φ(k), log_scale)``: (B, H, N, F) with padded keys zeroed, and the stabiliser.

        ``log_scale`` (B, H) is what the features were divided by (as ``exp(-log_scale)``), at
        least ``previous_log_scale``; None for maps without one.
        """
        raise NotImplementedError

    def before_call(self, head_dim: int) -> None:
        """Hook run once per call before any feature is computed (e.g. scheduled redraws)."""

    def cache_owner(self) -> object:
        """A token that changes whenever features change (a cache made before is then stale)."""
        return None

    def chunk_size(self, n_features: int, value_dim: int) -> int:
        """The causal chunk length: the option, or (None) a power of two near √(F·(Dv+1)).

        That balances the two costs of the chunked algorithm, the (N·C) scores inside chunks and
        the (N/C)·F·Dv running states: 64 for ``linear`` with D = 64, 128 for the Performer's 266
        features.
        """
        if self.options.chunk_size is not None:
            return int(self.options.chunk_size)
        balanced = math.sqrt(n_features * (value_dim + 1))
        return int(min(256, max(16, 2 ** round(math.log2(balanced)))))

    # -- the parallel form -------------------------------------------------------------------------
    def attend(self, q, k, v, *, causal, key_padding_mask, bias, scale, q_offset) -> Tensor:
        dtype = q.dtype
        q, k, v = _compute_dtype(q, k, v)
        self.before_call(q.shape[-1])
        if not causal:
            return self._streamed(q, k, v, key_padding_mask, scale).to(dtype)
        phi_q = self.query_features(q, scale)  # (B, H, Nq, F)
        phi_k, _ = self.key_features(k, key_padding_mask, scale, None)  # (B, H, Nk, F)
        out = kernelized_attention(
            phi_q, phi_k, v, causal=True, q_offset=q_offset,
            chunk_size=self.chunk_size(phi_q.shape[-1], v.shape[-1]),
        )
        return out.to(dtype)  # type: ignore[union-attr]

    def _streamed(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, scale: float) -> Tensor:
        """Non-causal: S = Σ φ(k)[v, 1]ᵀ over key blocks, then φ(q) S per query block."""
        b, h, n_q, _ = q.shape
        n_features = self.query_features(q[:, :, :1], scale).shape[-1]
        step = max(1, _STREAM_BLOCK_ELEMENTS // (b * h * n_features))
        state = log_scale = None
        for start in range(0, k.shape[-2], step):
            mask = None if key_mask is None else key_mask[:, start : start + step]
            phi_k, new_scale = self.key_features(k[:, :, start : start + step], mask, scale, log_scale)
            block_state = key_state(phi_k, append_ones(v[:, :, start : start + step]))  # (B, H, F, Dv+1)
            state = block_state if state is None else _rescale(state, log_scale, new_scale) + block_state
            log_scale = new_scale
        if state is None:  # no keys at all
            return q.new_zeros(b, h, n_q, v.shape[-1])
        f, e = state.shape[-2:]
        differentiable = torch.is_grad_enabled() and (state.requires_grad or q.requires_grad)
        outputs = []
        out = None if differentiable else q.new_empty(b, h, n_q, e - 1)
        for start in range(0, n_q, step):
            phi_q = self.query_features(q[:, :, start : start + step], scale)  # (B, H, blk, F)
            n = phi_q.shape[-2]
            out_aug = torch.bmm(phi_q.reshape(b * h, n, f), state.reshape(b * h, f, e))
            block = divide_by_normaliser(out_aug.view(b, h, n, e))
            if out is None:
                outputs.append(block)
            else:  # without autograd, write in place rather than concatenating copies
                out[:, :, start : start + n] = block
        if out is not None:
            return out
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)

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
        self.before_call(q.shape[-1])
        phi_q = self.query_features(q, scale)
        phi_k, log_scale = self.key_features(k, key_mask, scale, cache.log_scale)
        owner = self.cache_owner()
        if cache.state is not None and cache.owner != owner:
            raise ShapeError(
                f"attention {self.name!r}: the features changed (redrawn) since this cache was "
                "started; start a new cache with new_cache()"
            )
        state0 = cache.state
        if state0 is not None:
            state0 = _rescale(state0, cache.log_scale, log_scale)
        out, state = kernelized_attention(
            phi_q, phi_k, v, causal=True, q_offset=0,
            chunk_size=self.chunk_size(phi_q.shape[-1], v.shape[-1]),
            initial_state=state0, return_state=True,
        )
        cache.state, cache.log_scale, cache.owner = state, log_scale, owner
        cache.advance(k.shape[-2])
        return out.to(dtype)  # type: ignore[union-attr]


def _rescale(state: Tensor, old: Tensor | None, new: Tensor | None) -> Tensor:
    """A state summed at stabiliser ``old`` brought to ``new`` (>= old): × exp(old − new)."""
    if old is None or new is None:
        return state
    # A state that has seen no key yet (old = -inf) is zero; keep it zero without NaN.
    factor = torch.where(torch.isfinite(old), torch.exp(old - new), torch.zeros_like(old))
    return state * factor[..., None, None]


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
