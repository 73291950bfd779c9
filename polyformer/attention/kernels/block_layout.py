"""Which tiles a pattern needs: the layout the block-sparse kernel executes.

The sequence is cut into tiles of ``block`` positions. For every query tile (per pattern head)
the layout lists the key tiles it needs; tiles that are only partly allowed carry a 0/-inf mask
tile, stored once per distinct tile. Query tiles are grouped by how many key tiles they need
(rounded up to a power of two), so that global rows needing every key tile do not pad the rest.

Inside a group each row's slots are ordered ``[extras…, run…]``: the *run* is the longest stretch
of key tiles ``row + offset + j`` that every row of the group needs (the band of a sliding window,
BigBird's window blocks); the *extras* are the rest (global and random tiles). The kernel reads a
run through an overlapping strided view of the key tiles, without copying, and gathers only the
extras. Run tiles that fall off either end of the sequence are guard tiles: always masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from polyformer.attention.patterns import FULL, PARTIAL, Causal, Pattern

FULL_TILE, PAD_TILE = 0, 1


@dataclass
class RowGroup:
    """Query tiles that need a similar number of key tiles; slots are ``[extras, run]``."""

    head: Tensor  # (R,) pattern head of each query tile
    row: Tensor  # (R,) query tile index
    cols: Tensor  # (R, S) key tile per slot; may lie outside [0, nb) for guard slots of the run
    tiles: Tensor  # (R, S) mask tile ids: 0 = fully allowed, 1 = masked (padding/guard), >= 2 partial
    run: int  # the last ``run`` slots are tiles row + run_offset + j
    run_offset: int
    mask_slots: tuple[int, ...]  # slots holding any tile that is not fully allowed
    #: (start, stop) ranges of rows that are consecutive tiles of one head (for strided runs)
    segments: list[tuple[int, int]] = field(default_factory=list)

    @property
    def slots(self) -> int:
        return self.cols.shape[1]

    @property
    def extras(self) -> int:
        return self.slots - self.run

    @property
    def windowed(self) -> bool:
        """Whether the kernel reads a run through a strided view (runs are at least 2 tiles)."""
        return self.run > 0

    def to(self, device: torch.device) -> "RowGroup":
        return RowGroup(self.head.to(device), self.row.to(device), self.cols.to(device), self.tiles.to(device),
                        self.run, self.run_offset, self.mask_slots, self.segments)


@dataclass
class BlockLayout:
    """The tiles a pattern needs at one length, ready for the kernel."""

    n: int
    block: int
    pattern_heads: int
    groups: list[RowGroup]
    mask_tiles: Tensor  # (U, block, block) bool, True = allowed; 0 = all True, 1 = all False
    may_have_empty_rows: bool  # some query may have no allowed key at all
    guard_before: int = 0  # guard tiles needed before tile 0 / after the last tile by runs
    guard_after: int = 0
    #: flat (head · nb + row) indices of query tiles without any key tile (their output is zero)
    keyless_rows: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n / self.block)

    def keys_per_query(self) -> float:
        """Average number of key positions computed per query (incl. masked parts of tiles)."""
        total = sum(g.cols.shape[0] * g.slots for g in self.groups) * self.block
        return total / max(1, self.pattern_heads * self.n_blocks)

    def to(self, device: torch.device) -> "BlockLayout":
        """The same layout with its index tensors on ``device``."""
        return BlockLayout(self.n, self.block, self.pattern_heads, [g.to(device) for g in self.groups],
                           self.mask_tiles.to(device), self.may_have_empty_rows, self.guard_before,
                           self.guard_after, self.keyless_rows.to(device))


def build_layout(pattern: Pattern, n: int, block: int, n_heads: int, causal: bool) -> BlockLayout:
    """Find the needed tiles of ``pattern`` (and causality) at length ``n`` with tiles of ``block``."""
    pattern.validate(n, n_heads)
    pattern.prepare(n, n_heads)
    classes = pattern.block_mask(n, block, n_heads).clone()  # (Hm, nb, nb)
    if causal:
        classes = torch.minimum(classes, Causal().block_mask(n, block, n_heads))
    if n % block:
        # The last key tile runs past the end: its padded keys must be masked out explicitly.
        classes[..., -1].clamp_(max=PARTIAL)
    tile_id, mask_tiles = _resolve_partial_tiles(pattern, classes, n, block, causal)
    groups = [_order_slots(*g) for g in _bucket_rows(tile_id)]
    nb = classes.shape[-1]
    guard_before = max([0] + [-(int(g.cols.min())) for g in groups if g.windowed])
    guard_after = max([0] + [int(g.cols.max()) - (nb - 1) for g in groups if g.windowed])
    keyless = ((tile_id >= 0).sum(-1).flatten() == 0).nonzero().flatten()
    return BlockLayout(n, block, classes.shape[0], groups, mask_tiles,
                       _has_empty_rows(groups, mask_tiles, classes.shape[0], nb, n), guard_before, guard_after,
                       keyless)


def _resolve_partial_tiles(pattern: Pattern, classes: Tensor, n: int, block: int, causal: bool):
    """Evaluate PARTIAL tiles position by position: ids per tile (-1 = not needed) and the mask bank."""
    tile_id = torch.where(classes == FULL, FULL_TILE, -1)
    partial = (classes == PARTIAL).nonzero()  # (T, 3): head, query tile, key tile
    bank: list[Tensor] = []
    next_id = 2
    step = max(1, (1 << 24) // (block * block))
    within = torch.arange(block)
    for start in range(0, len(partial), step):
        h, i, j = partial[start : start + step].unbind(1)
        q = i[:, None] * block + within  # (T, block)
        k = j[:, None] * block + within
        allowed = pattern.mask(h[:, None, None], q.clamp(max=n - 1)[:, :, None], k.clamp(max=n - 1)[:, None, :], n)
        allowed = allowed & (k < n)[:, None, :]
        if causal:
            allowed = allowed & (k[:, None, :] <= q[:, :, None])
        flat = allowed.expand(len(h), block, block).reshape(len(h), -1)
        is_full = flat.all(1)
        is_partial = flat.any(1) & ~is_full
        tile_id[h[is_full], i[is_full], j[is_full]] = FULL_TILE
        if is_partial.any():
            # Identical partial tiles (the diagonal of a band, say) are stored once.
            uniq, inverse = torch.unique(flat[is_partial], dim=0, return_inverse=True)
            bank.append(uniq.view(-1, block, block))
            tile_id[h[is_partial], i[is_partial], j[is_partial]] = next_id + inverse
            next_id += len(uniq)
    full = torch.ones(1, block, block, dtype=torch.bool)
    return tile_id, torch.cat([full, ~full] + bank)


def _bucket_rows(tile_id: Tensor):
    """Yield (head, row, needed (R, nb), ids (R, nb)) per bucket of similar needed-tile counts."""
    heads, nb, _ = tile_id.shape
    flat_ids = tile_id.view(heads * nb, nb)
    needed = flat_ids >= 0
    counts = needed.sum(-1)
    buckets = torch.ceil(torch.log2(counts.clamp(min=1).double())).long()
    for bucket in torch.unique(buckets[counts > 0]).tolist():
        rows = ((buckets == bucket) & (counts > 0)).nonzero().flatten()
        yield rows // nb, rows % nb, needed[rows], flat_ids[rows]


def _order_slots(head: Tensor, row: Tensor, needed: Tensor, ids: Tensor) -> RowGroup:
    """Find the group's run and order every row's slots as ``[extras (padded), run]``."""
    r, nb = needed.shape
    run_offset, run = _common_run(row, needed)
    if run < 2:  # a strided view of a single tile saves nothing: gather everything
        run_offset, run = 0, 0
    extra_needed = needed.clone()
    if run:
        run_cols = row[:, None] + run_offset + torch.arange(run)  # (R, W), may be out of range
        inside = (run_cols >= 0) & (run_cols < nb)
        extra_needed[torch.arange(r)[:, None].expand_as(run_cols)[inside], run_cols[inside]] = False
    extra_counts = extra_needed.sum(-1)
    n_extra = int(extra_counts.max()) if r else 0
    # Needed extra tiles first, in increasing tile order.
    order = torch.argsort(extra_needed.to(torch.int8), dim=1, descending=True, stable=True)[:, :n_extra]
    extra_ids = torch.gather(ids, 1, order)
    padding = torch.arange(n_extra)[None, :] >= extra_counts[:, None]
    extra_cols = order.masked_fill(padding, 0)
    extra_ids = extra_ids.masked_fill(padding, PAD_TILE)
    if run:
        clamped = run_cols.clamp(0, nb - 1)
        run_ids = torch.gather(ids, 1, clamped).masked_fill(~inside, PAD_TILE)
        run_ids = torch.where(run_ids < 0, PAD_TILE, run_ids)  # not needed by this row (bucket padding)
        cols = torch.cat([extra_cols, run_cols], 1)
        tiles = torch.cat([extra_ids, run_ids], 1)
    else:
        cols, tiles = extra_cols, extra_ids
    mask_slots = tuple((tiles != FULL_TILE).any(0).nonzero().flatten().tolist())
    breaks = torch.ones(r, dtype=torch.bool)
    if r > 1:
        breaks[1:] = (row[1:] != row[:-1] + 1) | (head[1:] != head[:-1])
    starts = breaks.nonzero().flatten().tolist() + [r]
    segments = [(a, b) for a, b in zip(starts[:-1], starts[1:])]
    return RowGroup(head, row, cols, tiles, run, run_offset, mask_slots, segments)


def _common_run(row: Tensor, needed: Tensor) -> tuple[int, int]:
    """The longest stretch of offsets ``o`` such that every row needs tile ``row + o`` (or, for a few
    rows, that tile lies outside the sequence); returns (first offset, length), (0, 0) if none."""
    r, nb = needed.shape
    offsets = torch.arange(-(nb - 1), nb)  # candidate offsets
    cols = row[:, None] + offsets[None, :]  # (R, 2nb-1)
    inside = (cols >= 0) & (cols < nb)
    hit = torch.zeros_like(inside)
    hit[inside] = needed[torch.arange(r)[:, None].expand_as(cols)[inside], cols[inside]]
    # Needed by every row that has it; guards (outside the sequence) for at most a quarter of the
    # rows, so that rows with unrelated windows (e.g. first and last global rows) do not pair up.
    ok = (hit | ~inside).all(0) & hit.any(0) & ((~inside).sum(0) * 4 <= r)
    best_start, best_len, start = 0, 0, None
    for index, good in enumerate(ok.tolist() + [False]):
        if good and start is None:
            start = index
        elif not good and start is not None:
            if index - start > best_len:
                best_start, best_len = start, index - start
            start = None
    return (int(offsets[best_start]), best_len) if best_len else (0, 0)


def _has_empty_rows(groups: list[RowGroup], mask_tiles: Tensor, heads: int, nb: int, n: int) -> bool:
    """Whether some real query position has no allowed key (it then gets zeros)."""
    block = mask_tiles.shape[-1]
    has_key = torch.zeros(heads, nb, block, dtype=torch.bool)
    row_any = mask_tiles.any(-1)  # (U, block): which rows of a tile allow something
    for g in groups:
        has_key[g.head, g.row] = row_any[g.tiles].any(1)
    return bool((~has_key.view(heads, -1)[:, :n]).any())
