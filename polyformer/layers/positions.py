"""Absolute position encodings added to token vectors: learned tables and the sinusoidal closed form.

Both take ``position_ids`` of shape (B, N) or (N,) and return (B, N, d) or (N, d), so left-padded
batches and cached decoding (positions that continue from the cache) use the same call.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from polyformer.errors import ConfigError, ShapeError


def _check_positions(where: str, position_ids: Tensor, limit: int | None) -> None:
    if position_ids.is_floating_point() or position_ids.dtype == torch.bool:
        raise ShapeError(f"{where}: position_ids must be an integer tensor, got {position_ids.dtype}")
    if torch.compiler.is_compiling() or not position_ids.numel():
        return  # range checks read scalars back from the device; skipped inside compiled graphs
    if int(position_ids.min()) < 0:
        raise ShapeError(f"{where}: position_ids must be >= 0, got {int(position_ids.min())}")
    if limit is not None and int(position_ids.max()) >= limit:
        raise ShapeError(
            f"{where}: position {int(position_ids.max())} is beyond the {limit} learned positions; "
            "pass shorter inputs or enlarge the table with polyformer.layers.resize_positions_1d"
        )


class LearnedPositions(nn.Module):
    """A trained table of ``n_positions`` vectors (GPT-2 ``wpe``, BERT ``position_embeddings``)."""

    def __init__(self, n_positions: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_positions, d_model))
        nn.init.normal_(self.weight, std=0.02)

    @property
    def n_positions(self) -> int:
        return self.weight.shape[0]

    def forward(self, position_ids: Tensor) -> Tensor:
        """(B, N) or (N,) positions -> (B, N, d) or (N, d) vectors."""
        _check_positions("LearnedPositions", position_ids, self.n_positions)
        return self.weight[position_ids]


def sinusoidal_table(positions: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """Vaswani et al.: ``PE[p, 2i] = sin(p / base^(2i/dim))``, ``PE[p, 2i+1] = cos(...)``.

    ``positions`` of any shape -> (*positions.shape, dim), in float64 on positions' device.
    """
    if dim <= 0 or dim % 2:
        raise ConfigError(f"sinusoidal positions need an even, positive dim, got {dim}")
    exponent = torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim
    inv_freq = torch.exp(-math.log(base) * exponent)  # (dim/2,)
    angles = positions.to(torch.float64)[..., None] * inv_freq  # (..., dim/2)
    # Interleave sin and cos so that channel 2i is sin and 2i+1 is cos.
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal encodings (no parameters), computed for any position on demand."""

    def __init__(self, d_model: int, base: float = 10000.0) -> None:
        super().__init__()
        if d_model % 2:
            raise ConfigError(f"SinusoidalPositions: d_model must be even, got {d_model}")
        self.d_model = d_model
        self.base = base

    def forward(self, position_ids: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """(B, N) or (N,) positions -> (B, N, d) or (N, d) vectors of ``dtype``."""
        _check_positions("SinusoidalPositions", position_ids, None)
        return sinusoidal_table(position_ids, self.d_model, self.base).to(dtype)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, base={self.base}"
