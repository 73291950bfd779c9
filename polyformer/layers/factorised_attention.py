"""Attention along one axis of a (batch, time, space, dim) video tensor (TimeSformer's divided attention).

``axis="time"``: each spatial position attends over the frames (the other positions are a batch).
``axis="space"``: each frame attends over its patches. A class token, when given, joins the spatial
attention of every frame (it is repeated per frame) and its per-frame outputs are averaged back
into one token, as TimeSformer does; it takes no part in temporal attention. Factorising costs
O(T² S + S² T) instead of O((T S)²) for joint space-time attention.

The projections are those of :class:`~polyformer.layers.attention.MultiHeadAttention`
(``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``), and any registered mechanism may run along the axis.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from polyformer.errors import ConfigError, ShapeError
from polyformer.layers.attention import MultiHeadAttention

AXES = ("time", "space")


class FactorisedAttention(MultiHeadAttention):
    """Multi-head self-attention along ``axis`` ("time" or "space") of (B, T, S, d_model) inputs."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int | None = None, *, axis: str, **kwargs: Any) -> None:
        if axis not in AXES:
            raise ConfigError(f"FactorisedAttention: axis must be one of {', '.join(AXES)}, got {axis!r}")
        super().__init__(d_model, n_heads, head_dim, **kwargs)
        self.axis = axis

    def forward(  # type: ignore[override]
        self, x: Tensor, cls: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """(B, T, S, D) [+ class token (B, 1, D)] -> (B, T, S, D) and the class token's output.

        The class token's output is None along time (it does not take part there).
        """
        if x.dim() != 4:
            raise ShapeError(
                f"FactorisedAttention: input must be (batch, time, space, d_model), got {tuple(x.shape)}"
            )
        b, t, s, d = x.shape
        if cls is not None and tuple(cls.shape) != (b, 1, d):
            raise ShapeError(
                f"FactorisedAttention: the class token must be (batch, 1, d_model) = {(b, 1, d)}, "
                f"got {tuple(cls.shape)}"
            )
        if self.axis == "time":
            frames = x.transpose(1, 2).reshape(b * s, t, d)  # one sequence of frames per position
            out = super().forward(frames)
            return out.view(b, s, t, d).transpose(1, 2), None
        patches = x.reshape(b * t, s, d)  # one sequence of patches per frame
        if cls is None:
            return super().forward(patches).view(b, t, s, d), None
        tokens = torch.cat([cls.expand(b, t, d).reshape(b * t, 1, d), patches], dim=1)
        out = super().forward(tokens)  # (B*T, 1 + S, D)
        cls_out = out[:, 0].view(b, t, d).mean(dim=1, keepdim=True)  # one class token again
        return out[:, 1:].reshape(b, t, s, d), cls_out
