"""Stochastic depth (Huang et al., 2016): drop a residual branch for whole samples while training.

``drop_path(x, p)`` zeroes the branch of each sample with probability ``p`` and divides the kept
ones by ``1 - p``, so the expected branch is unchanged; in eval it is the identity. Deep ViTs and
DeiT raise the rate linearly with depth (:func:`drop_path_rates`): early layers, whose features every
later layer builds on, are dropped least.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyformer.options import require


def drop_path(x: Tensor, p: float, training: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """``x`` with each sample (first axis) zeroed with probability ``p`` and the rest scaled by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)  # one draw per sample, broadcast over the rest
    mask = torch.rand(shape, dtype=x.dtype, device=x.device, generator=generator) < keep
    return x * mask.to(x.dtype) / keep


def drop_path_rates(max_rate: float, n_layers: int) -> list[float]:
    """Per-layer rates rising linearly from 0 (first layer) to ``max_rate`` (last layer)."""
    if n_layers == 1:
        return [0.0]
    return [max_rate * i / (n_layers - 1) for i in range(n_layers)]


class DropPath(nn.Module):
    """:func:`drop_path` as a module (active in training mode only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        require(
            isinstance(p, (int, float)) and 0.0 <= p < 1.0,
            f"drop-path rate must be in [0, 1), got {p!r}",
        )
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        """Drop the branch ``x`` per sample while training; the identity in eval."""
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
