"""The protocol every attention mechanism implements, and the checks every call goes through.

Conventions (the same for every mechanism):

* ``q`` is ``(B, H, Nq, D)``, ``k`` is ``(B, H, Nk, D)``, ``v`` is ``(B, H, Nk, Dv)``; the output is
  ``(B, H, Nq, Dv)``.
* ``key_padding_mask`` is ``(B, Nk)``, **True (or 1) = a real token that may be attended to** (the
  Hugging Face ``attention_mask`` convention, the opposite of ``torch.nn.MultiheadAttention``).
* ``causal=True`` forbids keys after the query. When ``Nq < Nk`` (decoding with a cache) the queries
  are the *last* ``Nq`` positions, i.e. query ``i`` sits at position ``q_offset + i`` with
  ``q_offset = Nk - Nq`` by default.
* A query row with no allowed key (every key masked or padded) returns **zeros**, and its gradient
  is zero: never NaN.
* ``scale`` multiplies the scores ``q·k``; the default is ``1/sqrt(D)``.
* ``bias`` (mechanisms with ``supports_bias``) is added to the scaled scores; it broadcasts to
  (B, H, Nq, Nk). ``score_mod`` (mechanisms with ``supports_score_mod``) is a per-call score
  function ``score_mod(score, b, h, q_idx, kv_idx)`` (see :mod:`polyformer.attention.score_mods`).
* :meth:`AttentionMechanism.attention_probabilities` gives the (B, H, Nq, Nk) softmax matrix of
  mechanisms that have one (exact softmax over a known set of keys); the others raise ConfigError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from polyformer.errors import ConfigError, ShapeError
from polyformer.options import options_to_dict


@dataclass
class NoOptions:
    """A mechanism without options."""


class AttentionCache:
    """State a mechanism keeps between decoding steps (one per layer)."""

    #: whether :meth:`crop` can forget the latest positions (False for running states)
    can_crop: bool = False

    def __len__(self) -> int:  # number of positions seen so far
        raise NotImplementedError

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` positions (speculative decoding rolls back rejected tokens)."""
        raise NotImplementedError(f"{type(self).__name__} cannot forget positions")


class KVCache(AttentionCache):
    """Keys and values of past positions, in a buffer that grows by doubling.

    Appending is amortised O(new tokens): unlike ``torch.cat`` on every step it does not copy the
    whole past at each generated token.
    """

    def __init__(self) -> None:
        self._k: Tensor | None = None
        self._v: Tensor | None = None
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add ``k, v`` of shape (B, H, T, D) and return views of all keys and values so far."""
        new_length = self._length + k.shape[-2]
        if self._k is None or new_length > self._k.shape[-2] or self._k.shape[:2] != k.shape[:2]:
            if self._k is not None and self._k.shape[:2] != k.shape[:2]:
                raise ShapeError(
                    f"KVCache: batch/head shape changed from {tuple(self._k.shape[:2])} to "
                    f"{tuple(k.shape[:2])}; start a new cache for a new batch"
                )
            capacity = max(new_length, 2 * (self._k.shape[-2] if self._k is not None else 0), 16)
            grown_k = k.new_empty(*k.shape[:2], capacity, k.shape[-1])
            grown_v = v.new_empty(*v.shape[:2], capacity, v.shape[-1])
            if self._k is not None:
                grown_k[:, :, : self._length] = self._k[:, :, : self._length]
                grown_v[:, :, : self._length] = self._v[:, :, : self._length]  # type: ignore[index]
            self._k, self._v = grown_k, grown_v
        self._k[:, :, self._length : new_length] = k
        self._v[:, :, self._length : new_length] = v  # type: ignore[index]
        self._length = new_length
        return self._k[:, :, :new_length], self._v[:, :, :new_length]  # type: ignore[index]

    can_crop = True

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` positions; the buffer is kept for reuse."""
        if not 0 <= length <= self._length:
            raise ShapeError(f"KVCache.crop: length must be in [0, {self._length}], got {length}")
        self._length = length

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (e.g. to drop finished sequences)."""
        if self._k is not None:
            self._k, self._v = self._k[index], self._v[index]  # type: ignore[index]


class AttentionMechanism(nn.Module):
    """Base class of every mechanism: ``attn(q, k, v, causal=False, key_padding_mask=None)``.

    Subclasses set ``name`` and ``Options`` (a small dataclass validated in ``__post_init__``) and
    implement :meth:`attend`. Pattern-based mechanisms also expose ``pattern``.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    #: whether :meth:`attend` accepts an additive ``bias`` on the scores
    supports_bias: ClassVar[bool] = False
    #: whether :meth:`attend` accepts a per-call ``score_mod`` keyword
    supports_score_mod: ClassVar[bool] = False
    #: whether decoding step by step with :meth:`forward_cached` reproduces the full causal pass
    #: (False for patterns drawn over the whole length, such as random keys)
    consistent_decoding: bool = True

    def __init__(self, options: Any = None) -> None:
        super().__init__()
        self.options = options if options is not None else self.Options()

    # -- the public call -------------------------------------------------------------------------
    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        *,
        bias: Tensor | None = None,
        score_mod: Any = None,
        scale: float | None = None,
        q_offset: int | None = None,
    ) -> Tensor:
        """Attend queries ``q`` to keys ``k`` / values ``v``; see the module docstring for shapes."""
        key_padding_mask, q_offset = self._checked_call(q, k, v, causal, key_padding_mask, bias, score_mod, q_offset)
        # Only mechanisms that take a score function see the keyword, so the others keep the
        # plain ``attend`` signature.
        extra: dict[str, Any] = {} if score_mod is None else {"score_mod": score_mod}
        if scale is None:
            scale = 1.0 / math.sqrt(q.shape[-1])
        return self.attend(
            q, k, v, causal=causal, key_padding_mask=key_padding_mask, bias=bias, scale=scale,
            q_offset=q_offset, **extra,
        )

    def _checked_call(self, q: Tensor, k: Tensor, v: Tensor, causal: bool, key_padding_mask: Tensor | None,
                      bias: Tensor | None, score_mod: Any, q_offset: int | None) -> tuple[Tensor | None, int]:
        """The checks every call goes through; returns the bool padding mask and the query offset."""
        key_padding_mask = check_inputs(self.name, q, k, v, key_padding_mask, bias)
        if bias is not None and not self.supports_bias:
            raise ShapeError(
                f"attention {self.name!r} does not accept an additive bias; "
                f"use one of {', '.join(mechanisms_with('supports_bias'))}, which do"
            )
        if score_mod is not None and not self.supports_score_mod:
            raise ConfigError(
                f"attention {self.name!r} does not take a score function (score_mod); use one of "
                f"{', '.join(mechanisms_with('supports_score_mod'))}, which do"
            )
        if q_offset is None:
            q_offset = k.shape[-2] - q.shape[-2] if causal else 0
        return key_padding_mask, q_offset

    # -- probabilities ----------------------------------------------------------------------------
    def dense_mask(
        self, n_q: int, n_k: int, n_heads: int, q_offset: int, device: torch.device
    ) -> Tensor | None:
        """Which keys each query may see, as a bool (Hm, Nq, Nk) mask (None = every key).

        Causality and padding are added by the caller. Mechanisms whose output is not an exact
        softmax over a known set of keys (hashing, kernel feature maps) have no such mask: the
        default raises ConfigError naming the mechanisms that do.
        """
        raise ConfigError(
            f"attention {self.name!r} has no attention-probability matrix (its output is not a "
            "softmax over a known set of keys), so output_attentions needs another mechanism: one "
            f"of {', '.join(mechanisms_with_probabilities())}"
        )

    def attention_probabilities(
        self,
        q: Tensor,
        k: Tensor,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        *,
        bias: Tensor | None = None,
        score_mod: Any = None,
        scale: float | None = None,
        q_offset: int | None = None,
    ) -> Tensor:
        """The (B, H, Nq, Nk) probabilities this mechanism applies to the values.

        Rows sum to 1 over the allowed keys (0 for a query with no allowed key), so
        ``probabilities @ v`` equals the mechanism's output. Raises ConfigError for mechanisms
        without such a matrix (see :meth:`dense_mask`).
        """
        # Imported here: reference.py is a leaf module, but keeping base free of it at import
        # time lets every mechanism import base first.
        from polyformer.attention.reference import attention_probabilities

        # k stands in for v: only the score side is checked here.
        key_padding_mask, q_offset = self._checked_call(q, k, k, causal, key_padding_mask, bias, score_mod, q_offset)
        n_q, n_k = q.shape[-2], k.shape[-2]
        allowed = self.dense_mask(n_q, n_k, q.shape[1], q_offset, q.device)
        score_mod = self.resolve_score_mod(score_mod, q.shape[1])
        return attention_probabilities(
            q, k, allowed=allowed, causal=causal, key_padding_mask=key_padding_mask, bias=bias,
            score_mod=score_mod, scale=scale, q_offset=q_offset,
        )

    def resolve_score_mod(self, score_mod: Any, n_heads: int) -> Any:
        """The callable score function a call uses (names resolved; the mechanism's own folded in)."""
        if score_mod is None:
            return None
        from polyformer.attention.score_mods import resolve_score_mod

        return resolve_score_mod(score_mod, n_heads, where=f"attention {self.name!r}")

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool,
        key_padding_mask: Tensor | None,
        bias: Tensor | None,
        scale: float,
        q_offset: int,
    ) -> Tensor:
        """The mechanism itself, called with checked inputs (``key_padding_mask`` is bool or None)."""
        raise NotImplementedError

    # -- incremental decoding ----------------------------------------------------------------------
    def new_cache(self) -> AttentionCache:
        """A fresh decoding state for one layer (a key/value cache unless the mechanism is recurrent)."""
        return KVCache()

    def forward_cached(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cache: AttentionCache,
        key_padding_mask: Tensor | None = None,
        *,
        scale: float | None = None,
        bias: Tensor | None = None,
        score_mod: Any = None,
    ) -> Tensor:
        """Causal attention of new positions ``q, k, v`` (B, H, T, D) to themselves and the cache.

        ``key_padding_mask`` covers every key so far (past and new): shape (B, len(cache) + T);
        so does ``bias``, (…, T, len(cache) + T).
        """
        if not isinstance(cache, KVCache):
            raise TypeError(f"attention {self.name!r} expects a KVCache, got {type(cache).__name__}")
        k_all, v_all = cache.append(k, v)
        return self(
            q, k_all, v_all, causal=True, key_padding_mask=key_padding_mask, scale=scale, bias=bias,
            score_mod=score_mod,
        )

    def extra_repr(self) -> str:
        fields = options_to_dict(self.options)
        return ", ".join(f"{key}={value!r}" for key, value in fields.items())


def _mechanism_classes() -> dict[str, type[AttentionMechanism]]:
    """Every named mechanism class defined so far, found through subclassing (the registry builds on
    this module, so this module cannot ask the registry)."""
    found: dict[str, type[AttentionMechanism]] = {}
    stack = list(AttentionMechanism.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.name:
            found.setdefault(cls.name, cls)
    return found


def mechanisms_with(flag: str) -> list[str]:
    """Names of the mechanisms whose class attribute ``flag`` is true."""
    return sorted(name for name, cls in _mechanism_classes().items() if getattr(cls, flag, False))


def mechanisms_with_probabilities() -> list[str]:
    """Names of the mechanisms that define a probability matrix (override ``dense_mask``)."""
    return sorted(name for name, cls in _mechanism_classes().items()
                  if cls.dense_mask is not AttentionMechanism.dense_mask)


def check_inputs(
    name: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None,
    bias: Tensor | None = None,
) -> Tensor | None:
    """Validate shapes and dtypes of an attention call; return the padding mask as bool (or None)."""
    where = f"attention {name!r}"
    for label, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise ShapeError(f"{where}: {label} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ShapeError(
                f"{where}: {label} must have 4 dimensions (batch, heads, length, head_dim), "
                f"got shape {tuple(t.shape)}; reshape with .view(B, N, H, D).transpose(1, 2)"
            )
        if not t.is_floating_point():
            raise ShapeError(f"{where}: {label} must be a floating-point tensor, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ShapeError(f"{where}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ShapeError(f"{where}: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.shape[0] != k.shape[0] or q.shape[1] != k.shape[1]:
        raise ShapeError(
            f"{where}: q {tuple(q.shape)} and k {tuple(k.shape)} must agree in batch and heads"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"{where}: q and k head_dim differ ({q.shape[-1]} vs {k.shape[-1]})")
    if k.shape[:3] != v.shape[:3]:
        raise ShapeError(
            f"{where}: k {tuple(k.shape)} and v {tuple(v.shape)} must agree in batch, heads and length"
        )
    if key_padding_mask is not None:
        expected = (k.shape[0], k.shape[-2])
        if tuple(key_padding_mask.shape) != expected:
            raise ShapeError(
                f"{where}: key_padding_mask must have shape (batch, keys) = {expected}, got "
                f"{tuple(key_padding_mask.shape)} (True/1 = real token, False/0 = padding)"
            )
        if key_padding_mask.dtype != torch.bool:
            key_padding_mask = key_padding_mask != 0
    if bias is not None:
        target = (q.shape[0], q.shape[1], q.shape[-2], k.shape[-2])
        try:
            torch.broadcast_shapes(tuple(bias.shape), target)
        except RuntimeError:
            raise ShapeError(
                f"{where}: bias of shape {tuple(bias.shape)} does not broadcast to "
                f"(batch, heads, queries, keys) = {target}"
            ) from None
    return key_padding_mask
