"""Performer attention (Choromanski et al., 2021): softmax approximated by FAVOR+ features.

The softmax kernel ``exp(q·k·scale)`` equals ``E_w[φ(q')ᵀφ(k')]`` for ``q' = q·√scale``,
``k' = k·√scale`` and the *positive* random features

    φ(x) = exp(W x − |x|²/2) / √m,        W: m rows, orthogonal in blocks of D, Gaussian norms,

so attention becomes kernelized attention with m features (see ``linear``), in O(N·m·D).

Numerical stability: the features are computed as ``exp(logit − stabiliser)``, with the maximum
logit of each query row for queries and the maximum over every (unpadded) key and feature of a
(batch, head) for keys. Both constants cancel exactly between numerator and denominator, so
they change nothing but the range of the numbers (they are detached: their true gradient is 0).
The key stabiliser is shared by all keys of a sequence, so a causal query whose visible keys lie
far below the sequence's largest key logit (~80 in float32) may underflow to a zero output.
Decoding keeps a running stabiliser and rescales the state when it grows, exactly like online
softmax.

Features are drawn once, reproducibly from ``seed``; :meth:`PerformerAttention.redraw_features`
draws new ones on demand, and ``redraw_interval=n`` does it every ``n`` training calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from polyformer.attention.kernels.linearized import LinearizedAttention
from polyformer.attention.registry import register
from polyformer.options import require


def default_num_features(head_dim: int) -> int:
    """m = round(D · ln D) (at least D), the Performer paper's choice: 266 features for D = 64."""
    return max(head_dim, int(round(head_dim * math.log(max(head_dim, 2)))))


def draw_projection(
    num_features: int, head_dim: int, generator: torch.Generator | None, orthogonal: bool = True
) -> Tensor:
    """(m, D) float32 projection: Gaussian rows, orthogonalised in blocks of D when ``orthogonal``.

    Orthogonal rows keep the unbiasedness of Gaussian ones and lower the estimator's variance;
    each row is rescaled to the norm of an independent Gaussian vector (a chi(D) length), so its
    marginal distribution stays N(0, I).
    """
    gaussian = torch.randn(num_features, head_dim, generator=generator)
    if not orthogonal:
        return gaussian
    blocks = []
    for start in range(0, num_features, head_dim):
        square = torch.randn(head_dim, head_dim, generator=generator)
        basis, _ = torch.linalg.qr(square)  # orthonormal columns
        blocks.append(basis.T[: num_features - start])
    norms = gaussian.norm(dim=1, keepdim=True)  # chi(D) lengths
    return torch.cat(blocks, dim=0) * norms


@dataclass
class PerformerOptions:
    """Options of ``performer`` attention.

    ``num_features``: m random features (None = round(D·ln D), 266 for D = 64); more features give
    a closer approximation of softmax. ``orthogonal``: orthogonal random features (FAVOR+) or
    plain Gaussian ones. ``seed``: the features' seed (None = torch's global generator).
    ``redraw_interval``: draw new features every this many calls in training mode (None = never).
    ``chunk_size``: positions per chunk of the causal algorithm (None: automatic, as ``linear``).
    """

    num_features: int | None = None
    orthogonal: bool = True
    seed: int | None = 0
    redraw_interval: int | None = None
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        where = "attention 'performer'"
        if self.num_features is not None:
            require(
                _is_int(self.num_features) and self.num_features >= 1,
                f"{where}: num_features (m) must be an integer >= 1 or None for round(D·ln D), "
                f"got {self.num_features!r}",
            )
        if self.redraw_interval is not None:
            require(
                _is_int(self.redraw_interval) and self.redraw_interval >= 1,
                f"{where}: redraw_interval must be an integer >= 1 (training calls between "
                f"redraws) or None, got {self.redraw_interval!r}",
            )
        require(self.seed is None or _is_int(self.seed), f"{where}: seed must be an integer or None, got {self.seed!r}")
        require(isinstance(self.orthogonal, bool), f"{where}: orthogonal must be True or False, got {self.orthogonal!r}")
        require(
            self.chunk_size is None or (_is_int(self.chunk_size) and self.chunk_size >= 1),
            f"{where}: chunk_size must be an integer >= 1 or None (automatic), got {self.chunk_size!r}",
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@register
class PerformerAttention(LinearizedAttention):
    """FAVOR+: softmax attention approximated with positive orthogonal random features."""

    name = "performer"
    Options = PerformerOptions

    def __init__(self, options: PerformerOptions | None = None) -> None:
        super().__init__(options)
        self.register_buffer("projection", None)  # (m, D), drawn on first use when D is known
        self.draw_index = 0  # how many times features were (re)drawn after the first draw
        self.training_calls = 0

    # -- features ----------------------------------------------------------------------------------
    def redraw_features(self, head_dim: int | None = None) -> Tensor:
        """Draw new random features now (reproducibly: seed and draw count fix them)."""
        if head_dim is None:
            if self.projection is None:
                raise ValueError("redraw_features(head_dim) needs head_dim before the first call")
            head_dim = int(self.projection.shape[1])
        if self.projection is not None:
            self.draw_index += 1
        self._draw(head_dim)
        return self.projection  # type: ignore[return-value]

    def features_for(self, head_dim: int, device: torch.device | None = None) -> Tensor:
        """The current (m, D) projection, drawn on first use (or when D changes)."""
        if self.projection is None or self.projection.shape[1] != head_dim:
            self._draw(head_dim, device)
        return self.projection  # type: ignore[return-value]

    def _draw(self, head_dim: int, device: torch.device | None = None) -> None:
        m = self.options.num_features or default_num_features(head_dim)
        generator = None
        if self.options.seed is not None:
            # Mixing in the draw count makes every redraw new, and still reproducible.
            generator = torch.Generator().manual_seed(self.options.seed * 1_000_003 + self.draw_index)
        projection = draw_projection(m, head_dim, generator, self.options.orthogonal)
        if self.projection is not None:
            device = self.projection.device
        self.projection = projection if device is None else projection.to(device)

    def log_features(self, x: Tensor, scale: float) -> Tensor:
        """log of √m·φ(x·√scale) = W x√scale − scale·|x|²/2: (B, H, N, D) -> (B, H, N, m)."""
        b, h, n, d = x.shape
        w = self.features_for(d, x.device).to(device=x.device, dtype=x.dtype) * math.sqrt(scale)  # (m, D)
        x2 = x.reshape(b * h * n, d)
        half_norm = x2.square().sum(dim=-1, keepdim=True).mul_(-0.5 * scale)  # (BHN, 1)
        # addmm broadcasts the per-row term: one pass over the (BHN, m) logits instead of two.
        return torch.addmm(half_norm, x2, w.T).view(b, h, n, -1)  # (B, H, N, m)

    def before_call(self, head_dim: int) -> None:
        """Scheduled redraw: every ``redraw_interval`` calls in training mode."""
        if self.training and self.options.redraw_interval is not None:
            if self.training_calls and self.training_calls % self.options.redraw_interval == 0:
                self.redraw_features(head_dim)
            self.training_calls += 1

    def query_features(self, q: Tensor, scale: float) -> Tensor:
        logits = self.log_features(q, scale)  # (B, H, N, m)
        # Dividing a row by its largest feature cancels in that query's ratio. In place: one
        # (N, m) buffer, and autograd keeps only exp's output.
        return logits.sub_(logits.detach().amax(dim=-1, keepdim=True)).exp_()

    def key_features(self, k, key_mask, scale, previous_log_scale):
        logits = self.log_features(k, scale)  # (B, H, N, m)
        if key_mask is not None:
            logits = logits.masked_fill_(~key_mask[:, None, :, None], float("-inf"))
        # One stabiliser per (batch, head), shared by all keys so it cancels in every ratio.
        log_scale = logits.detach().amax(dim=(-2, -1))  # (B, H); -inf where every key is padded
        if previous_log_scale is not None:
            log_scale = torch.maximum(log_scale, previous_log_scale)
        shift = torch.where(torch.isfinite(log_scale), log_scale, torch.zeros_like(log_scale))
        return logits.sub_(shift[..., None, None]).exp_(), log_scale  # padded keys: exp(-inf) = 0

    def cache_owner(self) -> object:
        return (self.draw_index, None if self.projection is None else tuple(self.projection.shape))

    # -- checkpoints ---------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, int]:
        return {"draw_index": self.draw_index, "training_calls": self.training_calls}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.draw_index = int(state.get("draw_index", 0))
        self.training_calls = int(state.get("training_calls", 0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # The projection is created lazily; make room for a saved one before loading it.
        saved = state_dict.get(prefix + "projection")
        if saved is not None and (self.projection is None or self.projection.shape != saved.shape):
            self.projection = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
