"""Linearized attention (Katharopoulos et al., 2020, "Transformers are RNNs").

sim(q, k) = φ(q)ᵀφ(k) with φ = elu(x) + 1 by default, so that

    out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ  /  φ(q_i)ᵀ Σ_j φ(k_j)

costs O(N) instead of O(N²). Causal attention uses the chunked algorithm of
:mod:`polyformer.attention.kernels.kernelized`; decoding keeps the running sums only (O(1) per layer).
``scale`` is accepted and ignored: this similarity has no temperature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from polyformer.attention.kernels.feature_maps import check_non_negative, is_builtin, resolve_feature_map
from polyformer.attention.kernels.linearized import LinearizedAttention, zero_padded_keys
from polyformer.attention.registry import register
from polyformer.options import require


@dataclass
class LinearOptions:
    """Options of ``linear`` attention.

    ``feature_map``: a registered name (``"elu+1"``, ``"relu"``; add more with
    ``polyformer.attention.kernels.feature_maps.register_feature_map``) or a callable mapping (..., D) to
    non-negative (..., F). ``chunk_size``: positions per chunk of the causal algorithm (exact
    attention inside a chunk, a running state across chunks); any value works for any length;
    None picks a power of two near √(F·Dv), which balances the two parts of the cost.
    """

    feature_map: str | Callable[[Tensor], Tensor] = "elu+1"
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        resolve_feature_map(self.feature_map, where="attention 'linear'")
        require(
            self.chunk_size is None
            or (isinstance(self.chunk_size, int) and not isinstance(self.chunk_size, bool) and self.chunk_size >= 1),
            f"attention 'linear': chunk_size must be an integer >= 1 or None (automatic), got {self.chunk_size!r}",
        )


@register
class LinearAttention(LinearizedAttention):
    """Linearized attention with a pluggable non-negative feature map; O(N) time and memory."""

    name = "linear"
    Options = LinearOptions

    def __init__(self, options: LinearOptions | None = None) -> None:
        super().__init__(options)
        self._phi = resolve_feature_map(self.options.feature_map, where="attention 'linear'")
        # Built-in maps are non-negative by construction; a user map is checked on every call.
        self._check_each_call = not is_builtin(self._phi)

    def features(self, x: Tensor) -> Tensor:
        """φ(x): (B, H, N, D) -> (B, H, N, F)."""
        phi = self._phi(x)
        if self._check_each_call:
            check_non_negative(phi, "attention 'linear': feature_map")
        return phi

    def query_features(self, q: Tensor, scale: float) -> Tensor:
        return self.features(q)

    def key_features(self, k, key_mask, scale, previous_log_scale):
        return zero_padded_keys(self.features(k), key_mask), None
