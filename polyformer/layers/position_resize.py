"""Resize learned position tables for a new length or image grid (pure functions on weights).

A checkpoint trained at 224 px has a 14x14 grid of patch positions; running it at 384 px needs 24x24.
These functions interpolate the table and keep "prefix" rows (class / distillation tokens) as
they are. Tables may be (N, d) like an ``nn.Embedding`` weight or (1, N, d) like ViT's parameter;
the result has the same layout and dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from polyformer.errors import ConfigError, ShapeError


def _split(table: Tensor, num_prefix_tokens: int, where: str) -> tuple[Tensor, Tensor, bool]:
    """(prefix rows, the rows to resize) as 2-D tensors, and whether the table had a batch dim."""
    batched = table.dim() == 3
    if not (table.dim() == 2 or (batched and table.shape[0] == 1)):
        raise ShapeError(f"{where}: table must be (N, d) or (1, N, d), got shape {tuple(table.shape)}")
    rows = table[0] if batched else table
    if not 0 <= num_prefix_tokens < rows.shape[0]:
        raise ShapeError(
            f"{where}: num_prefix_tokens={num_prefix_tokens} must be in [0, {rows.shape[0]}) for a "
            f"table of {rows.shape[0]} rows"
        )
    return rows[:num_prefix_tokens], rows[num_prefix_tokens:], batched


def _join(prefix: Tensor, resized: Tensor, batched: bool, dtype: torch.dtype) -> Tensor:
    out = torch.cat((prefix, resized.to(dtype)), dim=0)
    return out[None] if batched else out


def _compute_dtype(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def resize_positions_1d(
    table: Tensor, new_length: int, *, num_prefix_tokens: int = 0, mode: str = "linear"
) -> Tensor:
    """Linearly interpolate a 1-D position table to ``new_length`` rows (plus the prefix rows).

    Uses ``align_corners=False`` (cell centres map onto cell centres), so a table resized to its own
    length is returned unchanged. ``mode="nearest"`` repeats rows instead (TimeSformer's time table).
    """
    where = "resize_positions_1d"
    prefix, rows, batched = _split(table, num_prefix_tokens, where)
    if new_length <= 0:
        raise ShapeError(f"{where}: new_length must be positive, got {new_length}")
    if mode not in ("linear", "nearest"):
        raise ConfigError(f"{where}: mode must be 'linear' or 'nearest', got {mode!r}")
    x = _compute_dtype(rows).t()[None]  # (1, d, N)
    corners = None if mode == "nearest" else False  # nearest takes no align_corners
    resized = F.interpolate(x, size=new_length, mode=mode, align_corners=corners)[0].t()
    return _join(prefix, resized, batched, table.dtype)


def resize_positions_2d(
    table: Tensor,
    new_grid: tuple[int, int],
    *,
    old_grid: tuple[int, int] | None = None,
    num_prefix_tokens: int = 0,
    mode: str = "bicubic",
) -> Tensor:
    """Interpolate a row-major (height, width) grid of positions to ``new_grid`` (ViT, CLIP).

    ``old_grid`` defaults to a square grid. Bicubic with ``align_corners=False`` is what Hugging
    Face's ``ViTEmbeddings.interpolate_pos_encoding`` does; TimeSformer's uses ``"nearest"``.
    """
    where = "resize_positions_2d"
    prefix, rows, batched = _split(table, num_prefix_tokens, where)
    n, dim = rows.shape
    if old_grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ShapeError(
                f"{where}: {n} grid positions are not a square; pass old_grid=(height, width)"
            )
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise ShapeError(f"{where}: old_grid {tuple(old_grid)} does not hold {n} positions")
    if mode not in ("bicubic", "bilinear", "nearest"):
        raise ConfigError(f"{where}: mode must be 'bicubic', 'bilinear' or 'nearest', got {mode!r}")
    if min(new_grid) <= 0:
        raise ShapeError(f"{where}: new_grid must be positive, got {tuple(new_grid)}")
    grid = _compute_dtype(rows).reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    corners = None if mode == "nearest" else False  # nearest takes no align_corners
    resized = F.interpolate(grid, size=tuple(new_grid), mode=mode, align_corners=corners)
    resized = resized.permute(0, 2, 3, 1).reshape(-1, dim)  # (new_h * new_w, d)
    return _join(prefix, resized, batched, table.dtype)
