"""Rotary position embeddings (RoPE): rotate pairs of query/key channels by position-dependent angles.

Pair ``i`` of the first ``rotary_dim`` channels turns by ``position * base^(-2i/rotary_dim)``. Two
conventions decide which channels form a pair:

* ``interleaved=True`` (GPT-J, "rotate every two"): channels (0, 1), (2, 3), ...
* ``interleaved=False`` (GPT-NeoX, LLaMA, "rotate half"): channels (i, i + rotary_dim/2).

Channels from ``rotary_dim`` on pass through unchanged (GPT-J rotates 64 of 256).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from polyformer.errors import ShapeError
from polyformer.options import require


@dataclass
class RotaryOptions:
    """``dim``: channels rotated per head (None = the whole head); ``base``; pairing convention."""

    dim: int | None = None
    base: float = 10000.0
    interleaved: bool = False

    def __post_init__(self) -> None:
        require(
            self.dim is None or (isinstance(self.dim, int) and self.dim > 0 and self.dim % 2 == 0),
            f"rotary.dim must be a positive even number of channels (or null for the whole head), "
            f"got {self.dim!r}",
        )
        require(
            isinstance(self.base, (int, float)) and self.base > 1,
            f"rotary.base must be a number > 1 (10000 in most models), got {self.base!r}",
        )
        require(
            isinstance(self.interleaved, bool),
            f"rotary.interleaved must be true or false, got {self.interleaved!r}",
        )


class RotaryAngles(NamedTuple):
    """cos and sin of every pair's angle, (B, 1, N, rotary_dim/2), and the pairing convention."""

    cos: Tensor
    sin: Tensor
    interleaved: bool

    def apply(self, x: Tensor) -> Tensor:
        """Rotate the first ``rotary_dim`` channels of ``x`` (B, H, N, D); the rest pass through."""
        return apply_rotary(x, self.cos, self.sin, self.interleaved)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool) -> Tensor:
    """``x`` (B, H, N, D) with pairs of its first ``2 * cos.shape[-1]`` channels rotated."""
    rotary_dim = 2 * cos.shape[-1]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    if interleaved:
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]
    else:
        x1, x2 = x_rot[..., : rotary_dim // 2], x_rot[..., rotary_dim // 2 :]
    r1 = x1 * cos - x2 * sin  # (B, H, N, rotary_dim/2)
    r2 = x2 * cos + x1 * sin
    if interleaved:
        rotated = torch.stack((r1, r2), dim=-1).flatten(-2)
    else:
        rotated = torch.cat((r1, r2), dim=-1)
    return torch.cat((rotated, x_pass), dim=-1) if x_pass.shape[-1] else rotated


class RotaryEmbedding(nn.Module):
    """Computes :class:`RotaryAngles` for position ids; one instance serves every layer of a stack.

    Angles are computed in float32 (float64 for float64 inputs), the precision Hugging Face's GPT-J
    and LLaMA use, then cast to the input dtype.
    """

    def __init__(self, head_dim: int, options: RotaryOptions | None = None) -> None:
        super().__init__()
        self.options = options if options is not None else RotaryOptions()
        self.rotary_dim = self.options.dim or head_dim
        if self.rotary_dim > head_dim:
            raise ShapeError(f"rotary dim {self.rotary_dim} exceeds the head dim {head_dim}")

    def forward(self, position_ids: Tensor, dtype: torch.dtype) -> RotaryAngles:
        """(B, N) or (N,) integer positions -> angles shaped (B or 1, 1, N, rotary_dim/2)."""
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        device = position_ids.device
        exponent = torch.arange(0, self.rotary_dim, 2, dtype=torch.int64, device=device).to(compute)
        inv_freq = 1.0 / (self.options.base ** (exponent / self.rotary_dim))  # (rotary_dim/2,)
        positions = position_ids if position_ids.dim() == 2 else position_ids[None]
        angles = positions.to(compute)[:, None, :, None] * inv_freq  # (B, 1, N, rotary_dim/2)
        return RotaryAngles(angles.cos().to(dtype), angles.sin().to(dtype), self.options.interleaved)

    def extra_repr(self) -> str:
        o = self.options
        return f"rotary_dim={self.rotary_dim}, base={o.base}, interleaved={o.interleaved}"
