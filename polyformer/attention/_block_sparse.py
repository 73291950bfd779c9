"""Block-sparse exact attention on CPU: only the tiles a pattern needs, forward and backward.

The sequence is cut into tiles of ``block`` positions. A :class:`BlockLayout` lists, for every
query tile (per pattern head), the key tiles it needs and, for tiles that are only partly allowed,
an additive 0/-inf mask tile. Query tiles are grouped by how many key tiles they need (global rows
that need every key tile go in a group of their own), and each group is processed in chunks:

    gather the chunk's key/value tiles  -> (B', R, S·block, D), contiguous
    scores = bmm(q_tiles, keysᵀ) + masks -> (B'·R, block, S·block)
    softmax with a saved log-sum-exp, out = bmm(p, values)

The backward pass recomputes the scores of each chunk from the saved log-sum-exp (as
FlashAttention does) and scatters key/value gradients back with ``index_add_``. Memory is
O(N · keys-per-query) for the layout and O(chunk) for the work space, never O(N²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from polyformer.attention.patterns import FULL, PARTIAL, Causal, Pattern

# Work-space budget of one chunk's score matrix; ~8 MB keeps the chunk within the L2/L3 caches and
# still gives bmm enough rows to run near peak on this CPU.
_CHUNK_BYTES = 8 << 20
_FULL_TILE, _PAD_TILE = 0, 1


@dataclass
class RowGroup:
    """Query tiles that need a similar number ``S`` of key tiles (padded to ``S``)."""

    head: Tensor  # (R,) pattern head of each query tile
    row: Tensor  # (R,) query tile index
    cols: Tensor  # (R, S) key tile indices (padding slots point at tile 0)
    tiles: Tensor  # (R, S) mask tile ids: 0 = fully allowed, 1 = padding (-inf), >= 2 partial
    mask_slots: tuple[int, ...]  # slot positions holding any tile that is not fully allowed
    #: key tiles of row r are cols[0, 0] + (row[r] - row[0]) + (0 … S-1): consecutive rows whose
    #: windows slide by one tile, so keys can be read through a strided view instead of a gather
    sliding: bool = False

    @property
    def slots(self) -> int:
        return self.cols.shape[1]


@dataclass
class BlockLayout:
    """The tiles a pattern needs at one length, ready for the kernel."""

    n: int
    block: int
    pattern_heads: int
    groups: list[RowGroup]
    mask_tiles: Tensor  # (U, block, block) bool, True = allowed; 0 = all True, 1 = all False
    may_have_empty_rows: bool  # some query may have no allowed key at all (before padding)

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n / self.block)

    def keys_per_query(self) -> float:
        """Average number of key positions computed per query (incl. masked parts of tiles)."""
        total = sum(g.cols.shape[0] * g.slots for g in self.groups) * self.block
        return total / max(1, self.pattern_heads * self.n_blocks)

    def to(self, device: torch.device) -> "BlockLayout":
        """The same layout with its index tensors on ``device``."""
        groups = [
            RowGroup(g.head.to(device), g.row.to(device), g.cols.to(device), g.tiles.to(device), g.mask_slots, g.sliding)
            for g in self.groups
        ]
        return BlockLayout(
            self.n, self.block, self.pattern_heads, groups, self.mask_tiles.to(device), self.may_have_empty_rows
        )


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
    heads, nb, _ = classes.shape

    # Evaluate partial tiles position by position; keep only those that really are partial.
    tile_id = torch.where(classes == FULL, _FULL_TILE, -1)
    partial = (classes == PARTIAL).nonzero()  # (T, 3): head, query tile, key tile
    unique_tiles: list[Tensor] = []
    offset = 2
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
        allowed = allowed.expand(len(h), block, block)
        flat = allowed.reshape(len(h), -1)
        is_full = flat.all(1)
        is_partial = flat.any(1) & ~is_full
        tile_id[h[is_full], i[is_full], j[is_full]] = _FULL_TILE
        if is_partial.any():
            # Identical partial tiles (the diagonal of a band, say) are stored once.
            uniq, inverse = torch.unique(flat[is_partial], dim=0, return_inverse=True)
            unique_tiles.append(uniq.view(-1, block, block))
            tile_id[h[is_partial], i[is_partial], j[is_partial]] = offset + inverse
            offset += len(uniq)
    mask_tiles = torch.cat(
        [torch.ones(1, block, block, dtype=torch.bool), torch.zeros(1, block, block, dtype=torch.bool)] + unique_tiles
    )
    groups = _group_rows(tile_id)
    return BlockLayout(n, block, heads, groups, mask_tiles, _has_empty_rows(groups, tile_id, mask_tiles, n))


def _has_empty_rows(groups: list[RowGroup], tile_id: Tensor, mask_tiles: Tensor, n: int) -> bool:
    """Whether some real query position has no allowed key (it then gets zeros)."""
    heads, nb, _ = tile_id.shape
    block = mask_tiles.shape[-1]
    has_key = torch.zeros(heads, nb, block, dtype=torch.bool)
    row_any = mask_tiles.any(-1)  # (U, block): which rows of a tile allow something
    for g in groups:
        has_key[g.head, g.row] = row_any[g.tiles].any(1)
    return bool((~has_key.view(heads, -1)[:, :n]).any())


def _group_rows(tile_id: Tensor) -> list[RowGroup]:
    """Group query tiles by their number of needed key tiles, rounded up to a power of two."""
    heads, nb, _ = tile_id.shape
    needed = tile_id >= 0
    counts = needed.sum(-1).flatten()  # (Hm * nb,)
    order = torch.argsort(needed.flatten(0, 1).to(torch.int8), dim=1, descending=True, stable=True)
    sorted_cols = order  # needed key tiles first, in increasing tile order
    sorted_ids = torch.gather(tile_id.flatten(0, 1), 1, order)
    buckets = torch.ceil(torch.log2(counts.clamp(min=1).double())).long()
    groups = []
    for bucket in torch.unique(buckets[counts > 0]).tolist():
        rows = ((buckets == bucket) & (counts > 0)).nonzero().flatten()
        slots = int(counts[rows].max())
        cols = sorted_cols[rows, :slots].clone()
        ids = sorted_ids[rows, :slots].clone()
        pad = torch.arange(slots)[None, :] >= counts[rows][:, None]
        cols[pad] = 0
        ids[pad] = _PAD_TILE
        mask_slots = tuple((ids != _FULL_TILE).any(0).nonzero().flatten().tolist())
        head, row = rows // nb, rows % nb
        sliding = bool(
            heads == 1
            and (ids != _PAD_TILE).all()
            and (row == row[0] + torch.arange(len(row))).all()
            and (cols == cols[:1, :1] + (row - row[0])[:, None] + torch.arange(slots)).all()
        )
        groups.append(RowGroup(head, row, cols, ids, mask_slots, sliding))
    return groups


# ------------------------------------------------------------------------------------------------
# The kernel
# ------------------------------------------------------------------------------------------------


class _Geometry:
    """Views of (B, H, N, D) tensors as (B', Hm, nb, block, D) tiles, B' = B·H / Hm."""

    def __init__(self, layout: BlockLayout, batch: int, heads: int) -> None:
        self.layout = layout
        self.batch, self.heads = batch, heads
        self.pattern_heads = layout.pattern_heads
        self.outer = batch * heads // self.pattern_heads  # B'
        self.nb, self.block = layout.n_blocks, layout.block
        self.padded = self.nb * self.block

    def tiles(self, x: Tensor) -> Tensor:
        """(B, H, N, D) -> (B', Hm, nb, block, D), padding N with zeros (a copy only if needed)."""
        n = x.shape[-2]
        if n != self.padded:
            x = torch.nn.functional.pad(x, (0, 0, 0, self.padded - n))
        return x.contiguous().view(self.outer, self.pattern_heads, self.nb, self.block, x.shape[-1])

    def untile(self, x: Tensor, n: int) -> Tensor:
        """Inverse of :meth:`tiles`, dropping the padding."""
        x = x.reshape(self.batch, self.heads, self.padded, x.shape[-1])
        return x[:, :, :n] if n != self.padded else x

    def chunks(self, group: RowGroup, itemsize: int, per_outer: bool = False):
        """Row ranges of ``group`` whose score matrices fit the chunk budget (for one of the B'
        slices when ``per_outer``)."""
        per_row = (1 if per_outer else self.outer) * self.block * group.slots * self.block * itemsize
        step = max(1, _CHUNK_BYTES // per_row)
        rows = group.row.shape[0]
        for start in range(0, rows, step):
            yield slice(start, min(rows, start + step))


def _chunk_scores(geo, group, sl, q5, k5, mask_bias, pad_bias):
    """Scores (B'·R, block, S·block) of one chunk, masked, plus the gathered keys."""
    hs, rs, cs = group.head[sl], group.row[sl], group.cols[sl]
    r, s, blk = len(rs), group.slots, geo.block
    qc = q5[:, hs, rs]  # (B', R, block, D)
    kc = k5[:, hs[:, None], cs]  # (B', R, S, block, D)
    d = qc.shape[-1]
    scores = torch.bmm(qc.reshape(-1, blk, d), kc.reshape(-1, s * blk, d).transpose(1, 2))
    if group.mask_slots:
        view = scores.view(geo.outer, r, blk, s, blk)
        if len(group.mask_slots) == s:
            view.add_(mask_bias[group.tiles[sl]].permute(0, 2, 1, 3))  # (R, block, S, block)
        else:
            for slot in group.mask_slots:  # e.g. only the two edge tiles of a band
                view[:, :, :, slot].add_(mask_bias[group.tiles[sl, slot]])
    if pad_bias is not None:
        # Padding varies per batch element: (B, R, S·block) broadcast over heads and query rows.
        keys = pad_bias[:, cs].reshape(geo.batch, 1, r, 1, s * blk)
        scores.view(geo.batch, geo.outer // geo.batch, r, blk, s * blk).add_(keys)
    return scores, qc, kc


def _gather_values(v5, group, sl):
    hs, cs = group.head[sl], group.cols[sl]
    vc = v5[:, hs[:, None], cs]  # (B', R, S, block, Dv)
    return vc.reshape(-1, group.slots * vc.shape[-2], vc.shape[-1])


def _softmax(scores: Tensor, safe: bool) -> Tensor:
    """Row softmax, fused (one pass per row in cache); ``safe`` maps rows of only -inf to zeros."""
    return torch.ops.aten._safe_softmax(scores, -1) if safe else torch.softmax(scores, -1)


class _Context:
    """Everything one forward or backward pass needs, shared by the two executors below."""

    def __init__(self, q, k, v, key_padding_mask, layout: BlockLayout, scale: float) -> None:
        b, h, self.n, _ = q.shape
        self.geo = geo = _Geometry(layout, b, h)
        self.q5, self.k5, self.v5 = geo.tiles(q * scale), geo.tiles(k), geo.tiles(v)
        self.mask_bias = _mask_bias(layout, q.dtype)
        self.pad_bias = _padding_bias(key_padding_mask, geo, q.dtype)
        self.safe = layout.may_have_empty_rows or key_padding_mask is not None
        self.itemsize = q.element_size()
        self.layout = layout

    def windows(self, x5: Tensor, outer: int, group: RowGroup, sl: slice) -> Tensor:
        """(R, S·block, D) overlapping key windows of a sliding group, as a view of ``x5``."""
        geo = self.geo
        first = int(group.cols[sl.start, 0])
        base = x5[outer, 0, first:]
        d = x5.shape[-1]
        return base.as_strided((sl.stop - sl.start, group.slots * geo.block, d), (geo.block * d, d, 1))

    def mask_sliding(self, scores: Tensor, outer: int, group: RowGroup, sl: slice) -> None:
        """Add pattern and padding masks to the (R, block, S·block) scores of a sliding chunk."""
        geo, r, s, blk = self.geo, sl.stop - sl.start, group.slots, self.geo.block
        view = scores.view(r, blk, s, blk)
        for slot in group.mask_slots:
            view[:, :, slot].add_(self.mask_bias[group.tiles[sl, slot]])
        if self.pad_bias is not None:
            batch = outer * geo.batch // geo.outer
            first = int(group.cols[sl.start, 0])
            keys = self.pad_bias[batch, first:].as_strided((r, s * blk), (blk, 1))
            scores.add_(keys[:, None, :])


def _forward_sliding(c: _Context, group: RowGroup, out5: Tensor) -> None:
    for outer in range(c.geo.outer):
        for sl in c.geo.chunks(group, c.itemsize, per_outer=True):
            rows = slice(int(group.row[sl.start]), int(group.row[sl.stop - 1]) + 1)
            scores = torch.bmm(c.q5[outer, 0, rows], c.windows(c.k5, outer, group, sl).transpose(1, 2))
            c.mask_sliding(scores, outer, group, sl)
            torch.bmm(_softmax(scores, c.safe), c.windows(c.v5, outer, group, sl), out=out5[outer, 0, rows])


def _forward_gathered(c: _Context, group: RowGroup, out5: Tensor) -> None:
    geo = c.geo
    for sl in geo.chunks(group, c.itemsize):
        scores, _, _ = _chunk_scores(geo, group, sl, c.q5, c.k5, c.mask_bias, c.pad_bias)
        out = torch.bmm(_softmax(scores, c.safe), _gather_values(c.v5, group, sl))
        out5[:, group.head[sl], group.row[sl]] = out.view(geo.outer, -1, geo.block, out.shape[-1])


def _backward_sliding(c: _Context, group: RowGroup, do5: Tensor, grads: tuple[Tensor, Tensor, Tensor]) -> None:
    dq5, dk5, dv5 = grads
    geo, blk = c.geo, c.geo.block
    for outer in range(geo.outer):
        dk_tiles = dk5[outer, 0].view(geo.nb, -1)
        dv_tiles = dv5[outer, 0].view(geo.nb, -1)
        for sl in geo.chunks(group, c.itemsize, per_outer=True):
            rows = slice(int(group.row[sl.start]), int(group.row[sl.stop - 1]) + 1)
            r = rows.stop - rows.start
            kw, vw = c.windows(c.k5, outer, group, sl), c.windows(c.v5, outer, group, sl)
            qc, do = c.q5[outer, 0, rows], do5[outer, 0, rows]
            scores = torch.bmm(qc, kw.transpose(1, 2))
            c.mask_sliding(scores, outer, group, sl)
            probs = _softmax(scores, c.safe)
            tiles = group.cols[sl].flatten()
            dv_tiles.index_add_(0, tiles, torch.bmm(probs.transpose(1, 2), do).view(r * group.slots, -1))
            ds = torch._softmax_backward_data(torch.bmm(do, vw.transpose(1, 2)), probs, -1, probs.dtype)
            torch.bmm(ds, kw, out=dq5[outer, 0, rows])
            dk_tiles.index_add_(0, tiles, torch.bmm(ds.transpose(1, 2), qc).view(r * group.slots, -1))
    del blk


def _backward_gathered(c: _Context, group: RowGroup, do5: Tensor, grads: tuple[Tensor, Tensor, Tensor]) -> None:
    dq5, dk5, dv5 = grads
    geo = c.geo
    hm, nb, blk = geo.pattern_heads, geo.nb, geo.block
    dk_flat = dk5.view(geo.outer, hm * nb, -1)
    dv_flat = dv5.view(geo.outer, hm * nb, -1)
    for sl in geo.chunks(group, c.itemsize):
        hs, rs, cs = group.head[sl], group.row[sl], group.cols[sl]
        r, s = len(rs), group.slots
        scores, qc, kc = _chunk_scores(geo, group, sl, c.q5, c.k5, c.mask_bias, c.pad_bias)
        probs = _softmax(scores, c.safe)  # (B'R, block, S·block)
        do = do5[:, hs, rs].reshape(-1, blk, do5.shape[-1])
        flat_cols = (hs[:, None] * nb + cs).flatten()
        dv = torch.bmm(probs.transpose(1, 2), do)  # (B'R, S·block, Dv)
        dv_flat.index_add_(1, flat_cols, dv.view(geo.outer, r * s, -1))
        dp = torch.bmm(do, _gather_values(c.v5, group, sl).transpose(1, 2))
        # dS = P ∘ (dP − rowsum(dP ∘ P)), fused per row
        ds = torch._softmax_backward_data(dp, probs, -1, probs.dtype)
        d = qc.shape[-1]
        dq = torch.bmm(ds, kc.reshape(-1, s * blk, d))
        dq5[:, hs, rs] = dq.view(geo.outer, r, blk, d)
        dk = torch.bmm(ds.transpose(1, 2), qc.reshape(-1, blk, d))
        dk_flat.index_add_(1, flat_cols, dk.view(geo.outer, r * s, -1))


class BlockSparseAttention(torch.autograd.Function):
    """Exact attention over the tiles of a :class:`BlockLayout`; see the module docstring.

    Nothing but the inputs is saved: the backward pass recomputes each chunk's probabilities
    with the same fused softmax, which costs one extra score product and keeps memory O(chunk).
    """

    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, layout: BlockLayout, scale: float):  # type: ignore[override]
        c = _Context(q, k, v, key_padding_mask, layout, scale)
        # Query tiles that need no key at all are in no group and keep their zeros.
        out5 = c.q5.new_zeros(*c.q5.shape[:-1], v.shape[-1])
        for group in layout.groups:
            (_forward_sliding if group.sliding else _forward_gathered)(c, group, out5)
        ctx.save_for_backward(q, k, v, key_padding_mask)
        ctx.layout, ctx.scale = layout, scale
        return c.geo.untile(out5, c.n)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, key_padding_mask = ctx.saved_tensors
        c = _Context(q, k, v, key_padding_mask, ctx.layout, ctx.scale)
        do5 = c.geo.tiles(grad_out)
        grads = (torch.zeros_like(c.q5), torch.zeros_like(c.k5), torch.zeros_like(c.v5))
        for group in ctx.layout.groups:
            (_backward_sliding if group.sliding else _backward_gathered)(c, group, do5, grads)
        dq5, dk5, dv5 = grads
        return c.geo.untile(dq5, c.n) * ctx.scale, c.geo.untile(dk5, c.n), c.geo.untile(dv5, c.n), None, None, None


def _mask_bias(layout: BlockLayout, dtype: torch.dtype) -> Tensor:
    """The mask tiles as additive 0 / -inf scores."""
    zeros = torch.zeros((), dtype=dtype, device=layout.mask_tiles.device)
    return torch.where(layout.mask_tiles, zeros, -math.inf)


def _padding_bias(key_padding_mask: Tensor | None, geo: _Geometry, dtype: torch.dtype) -> Tensor | None:
    """(B, nb, block) additive 0 / -inf per key tile from the padding mask (None if no padding)."""
    if key_padding_mask is None:
        return None
    kpm = key_padding_mask
    if kpm.shape[-1] != geo.padded:
        kpm = torch.nn.functional.pad(kpm, (0, geo.padded - kpm.shape[-1]), value=False)
    zeros = torch.zeros((), dtype=dtype, device=kpm.device)
    return torch.where(kpm, zeros, -math.inf).view(geo.batch, geo.nb, geo.block)


def block_sparse_attention(
    q: Tensor, k: Tensor, v: Tensor, layout: BlockLayout, *, scale: float, key_padding_mask: Tensor | None = None
) -> Tensor:
    """Exact attention restricted to ``layout`` (self-attention, queries and keys of equal length)."""
    return BlockSparseAttention.apply(q, k, v, key_padding_mask, layout, scale)


__all__ = ["BlockLayout", "RowGroup", "block_sparse_attention", "build_layout"]
