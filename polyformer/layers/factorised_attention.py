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
        self, x: Tensor, cls: Tensor | None = None, *, output_attentions: bool = False
    ) -> tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, Tensor]:
        """(B, T, S, D) [+ class token (B, 1, D)] -> (B, T, S, D) and the class token's output.

        The class token's output is None along time (it does not take part there). With
        ``output_attentions`` a third item is returned: the probabilities of each sequence,
        (B·S, H, T, T) along time, (B·T, H, [1 +] S, [1 +] S) along space (the class token first).
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
        probs: tuple[Tensor, ...] = ()

        def attend(seq: Tensor) -> Tensor:
            nonlocal probs
            if not output_attentions:
                return super(FactorisedAttention, self).forward(seq)
            out, p = super(FactorisedAttention, self).forward(seq, output_attentions=True)
            probs = (p,)
            return out

        if self.axis == "time":
            frames = x.transpose(1, 2).reshape(b * s, t, d)  # one sequence of frames per position
            out = attend(frames)
            return (out.view(b, s, t, d).transpose(1, 2), None, *probs)  # type: ignore[return-value]
        patches = x.reshape(b * t, s, d)  # one sequence of patches per frame
        if cls is None:
            return (attend(patches).view(b, t, s, d), None, *probs)  # type: ignore[return-value]
        tokens = torch.cat([cls.expand(b, t, d).reshape(b * t, 1, d), patches], dim=1)
        out = attend(tokens)  # (B*T, 1 + S, D)
        cls_out = out[:, 0].view(b, t, d).mean(dim=1, keepdim=True)  # one class token again
        return (out[:, 1:].reshape(b, t, s, d), cls_out, *probs)  # type: ignore[return-value]
