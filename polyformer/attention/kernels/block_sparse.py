"""Block-sparse exact attention on CPU: only the tiles a layout needs, forward and backward.

For each row group of the layout (:mod:`polyformer.attention.kernels.block_layout`), chunks of query
tiles are processed with large batched matrix products on contiguous 3-D tensors:

    scores = bmm(q_tiles, keysᵀ) + masks      (R, block, S·block)
    probs  = softmax(scores)                   one fused pass per row, in cache
    out    = bmm(probs, values)

Two executors share this shape. The *windowed* one reads each row's run of key tiles through an
overlapping strided view (no copy) and gathers only the extra tiles; it loops over batch×head
slices. The *gathered* one copies every needed key tile with ``index_select`` and batches all
slices at once. Nothing but the inputs is saved for backward: it recomputes each chunk's
probabilities with the same fused softmax, uses the fused softmax backward for dS, and scatters
key/value gradients with ``index_add_``. Memory: O(N · keys per query) for the layout, O(chunk)
for work space, never O(N²).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from polyformer.attention.kernels.block_layout import BlockLayout, RowGroup, build_layout

# Work-space budget of one chunk's score matrix: large enough for bmm to run near peak, small
# enough to stay in cache.
_CHUNK_BYTES = 6 << 20


def _softmax(scores: Tensor, safe: bool) -> Tensor:
    """Row softmax, fused; ``safe`` maps rows of only -inf to zeros (rows without any key)."""
    return torch.ops.aten._safe_softmax(scores, -1) if safe else torch.softmax(scores, -1)


def _softmax_backward(dp: Tensor, probs: Tensor) -> Tensor:
    """dS = P ∘ (dP − rowsum(dP ∘ P)), fused per row."""
    return torch._softmax_backward_data(dp, probs, -1, probs.dtype)


class _Context:
    """Inputs of one pass as tiles, and the masks: shared by both executors, forward and backward.

    Tiles are viewed as (B', Hm, nb, block, D) with B' = B·H / Hm (Hm = 1 for patterns shared by
    all heads, H for per-head patterns). Key/value tiles carry guard tiles on both ends when a run
    reaches past the sequence; guards are always masked.
    """

    def __init__(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None,
                 layout: BlockLayout, scale: float) -> None:
        self.layout = layout
        self.batch, self.heads, self.n, _ = q.shape
        self.hm, self.nb, self.block = layout.pattern_heads, layout.n_blocks, layout.block
        self.outer = self.batch * self.heads // self.hm
        self.padded = self.nb * self.block
        self.guard = layout.guard_before
        self.q5 = self.tiles(q * scale)
        self.k5, self.v5 = self.tiles(k, guards=True), self.tiles(v, guards=True)
        dtype = q.dtype
        zero = torch.zeros((), dtype=dtype, device=q.device)
        self.mask_bias = torch.where(layout.mask_tiles, zero, -math.inf)  # (U, block, block)
        self.pad_bias = None
        if key_padding_mask is not None:
            kpm = F.pad(key_padding_mask, (self.guard * self.block,
                                           self.padded - self.n + layout.guard_after * self.block), value=False)
            self.pad_bias = torch.where(kpm, zero, -math.inf).view(self.batch, -1, self.block)
        self.safe = layout.may_have_empty_rows or key_padding_mask is not None

    def tiles(self, x: Tensor, guards: bool = False) -> Tensor:
        """(B, H, N, D) -> (B', Hm, tiles, block, D), padded with zeros (and guard tiles)."""
        before = self.guard * self.block if guards else 0
        after = self.padded - x.shape[-2] + (self.layout.guard_after * self.block if guards else 0)
        if before or after:
            x = F.pad(x, (0, 0, before, after))
        return x.contiguous().view(self.outer, self.hm, -1, self.block, x.shape[-1])

    def rows_buffer(self, width: int) -> Tensor:
        """(B', Hm, nb, block, width) for per-query results: every row a group covers is written
        by the executors, so only query tiles without any key are zeroed."""
        out = self.q5.new_empty(*self.q5.shape[:-1], width)
        if len(self.layout.keyless_rows):
            out.view(self.outer, self.hm * self.nb, -1)[:, self.layout.keyless_rows] = 0
        return out

    def untile(self, x5: Tensor, guards: bool = False) -> Tensor:
        """Inverse of :meth:`tiles`, dropping padding and guards."""
        if guards:
            x5 = x5[:, :, self.guard : self.guard + self.nb]
        x = x5.reshape(self.batch, self.heads, self.padded, x5.shape[-1])
        return x[:, :, : self.n]

    def chunks(self, rows: range, slots: int, slices: int):
        """Sub-ranges of ``rows`` whose scores (``slices`` batch×head slices) fit the budget."""
        per_row = slices * self.block * slots * self.block * 4
        step = max(1, _CHUNK_BYTES // per_row)
        for start in range(rows.start, rows.stop, step):
            yield slice(start, min(rows.stop, start + step))

    def add_masks(self, scores: Tensor, group: RowGroup, sl: slice) -> None:
        """Add partial-tile masks to scores viewed as (..., R, block, S, block)."""
        if not group.mask_slots:
            return
        r, s, blk = sl.stop - sl.start, group.slots, self.block
        view = scores.view(-1, r, blk, s, blk)
        if len(group.mask_slots) == s:
            tiles = self.mask_bias.index_select(0, group.tiles[sl].flatten()).view(r, s, blk, blk)
            view.add_(tiles.permute(0, 2, 1, 3))
        else:
            for slot in group.mask_slots:  # e.g. only the edge tiles of a band
                view[:, :, :, slot].add_(self.mask_bias.index_select(0, group.tiles[sl, slot]))


# ------------------------------------------------------------------------------------------------
# Windowed executor: run through a strided view, extras gathered; one batch×head slice at a time
# ------------------------------------------------------------------------------------------------


class _Window:
    """Keys/values of one chunk of a windowed group in one (B', head) slice."""

    def __init__(self, c: _Context, group: RowGroup, outer: int, sl: slice) -> None:
        self.c, self.group, self.sl = c, group, sl
        self.head = int(group.head[sl.start])
        self.first_row = int(group.row[sl.start])
        self.r = sl.stop - sl.start
        self.extra_cols = group.cols[sl, : group.extras].flatten() + c.guard
        self.run_start = self.first_row + group.run_offset + c.guard
        self.split = group.extras * c.block

    def keys(self, x5: Tensor, outer: int) -> tuple[Tensor | None, Tensor]:
        """(extras (R, E·block, D) or None, run (R, W·block, D) strided view) of ``x5``."""
        tiles = x5[outer, self.head]  # (tiles, block, D), contiguous
        d, blk = tiles.shape[-1], self.c.block
        run = tiles[self.run_start :].as_strided((self.r, self.group.run * blk, d), (blk * d, d, 1))
        if not self.group.extras:
            return None, run
        extras = tiles.index_select(0, self.extra_cols).view(self.r, self.split, d)
        return extras, run

    def scores(self, q: Tensor, k5: Tensor, outer: int) -> tuple[Tensor, Tensor | None, Tensor]:
        kx, kw = self.keys(k5, outer)
        blk = self.c.block
        scores = q.new_empty(self.r, blk, self.group.slots * blk)
        if kx is not None:
            torch.bmm(q, kx.transpose(1, 2), out=scores[:, :, : self.split])
        torch.bmm(q, kw.transpose(1, 2), out=scores[:, :, self.split :])
        self.c.add_masks(scores, self.group, self.sl)
        if self.c.pad_bias is not None:
            scores.add_(self.key_padding(outer)[:, None, :])
        return scores, kx, kw

    def key_padding(self, outer: int) -> Tensor:
        """(R, S·block) additive padding of this chunk's keys."""
        c, blk = self.c, self.c.block
        pad = c.pad_bias[outer * c.batch // c.outer]  # (tiles, block)
        run = pad[self.run_start :].as_strided((self.r, self.group.run * blk), (blk, 1))
        if not self.group.extras:
            return run
        extras = pad.index_select(0, self.extra_cols).view(self.r, self.split)
        return torch.cat([extras, run], 1)

    def scatter(self, grad5: Tensor, outer: int, grad_extras: Tensor | None, grad_run: Tensor) -> None:
        """Add per-slot key/value gradients back into their tiles."""
        tiles = grad5[outer, self.head].view(grad5.shape[2], -1)
        if grad_extras is not None:
            tiles.index_add_(0, self.extra_cols, grad_extras.reshape(self.r * self.group.extras, -1))
        run_cols = (torch.arange(self.group.run, device=tiles.device)[None, :]
                    + torch.arange(self.r, device=tiles.device)[:, None] + self.run_start).flatten()
        tiles.index_add_(0, run_cols, grad_run.reshape(self.r * self.group.run, -1))


def _windowed_chunks(c: _Context, group: RowGroup):
    for outer in range(c.outer):
        for start, stop in group.segments:
            for sl in c.chunks(range(start, stop), group.slots, 1):
                yield outer, sl


def _forward_windowed(c: _Context, group: RowGroup, out5: Tensor) -> None:
    for outer, sl in _windowed_chunks(c, group):
        w = _Window(c, group, outer, sl)
        rows = slice(w.first_row, w.first_row + w.r)
        scores, _, _ = w.scores(c.q5[outer, w.head, rows], c.k5, outer)
        probs = _softmax(scores, c.safe)
        vx, vw = w.keys(c.v5, outer)
        out = out5[outer, w.head, rows]
        torch.bmm(probs[:, :, w.split :], vw, out=out)
        if vx is not None:
            out.baddbmm_(probs[:, :, : w.split], vx)


def _backward_windowed(c: _Context, group: RowGroup, do5: Tensor, grads: tuple[Tensor, Tensor, Tensor]) -> None:
    dq5, dk5, dv5 = grads
    for outer, sl in _windowed_chunks(c, group):
        w = _Window(c, group, outer, sl)
        rows = slice(w.first_row, w.first_row + w.r)
        q, do = c.q5[outer, w.head, rows], do5[outer, w.head, rows]
        scores, kx, kw = w.scores(q, c.k5, outer)
        probs = _softmax(scores, c.safe)
        vx, vw = w.keys(c.v5, outer)
        px, pw = probs[:, :, : w.split], probs[:, :, w.split :]
        w.scatter(dv5, outer, torch.bmm(px.transpose(1, 2), do) if vx is not None else None,
                  torch.bmm(pw.transpose(1, 2), do))
        dp = torch.empty_like(probs)
        torch.bmm(do, vw.transpose(1, 2), out=dp[:, :, w.split :])
        if vx is not None:
            torch.bmm(do, vx.transpose(1, 2), out=dp[:, :, : w.split])
        ds = _softmax_backward(dp, probs)
        dsx, dsw = ds[:, :, : w.split], ds[:, :, w.split :]
        dq = dq5[outer, w.head, rows]
        torch.bmm(dsw, kw, out=dq)
        if kx is not None:
            dq.baddbmm_(dsx, kx)
        w.scatter(dk5, outer, torch.bmm(dsx.transpose(1, 2), q) if kx is not None else None,
                  torch.bmm(dsw.transpose(1, 2), q))


# ------------------------------------------------------------------------------------------------
# Gathered executor: every key tile gathered; all batch×head slices at once
# ------------------------------------------------------------------------------------------------


def _gathered_scores(c: _Context, group: RowGroup, sl: slice):
    """Scores (B'·R, block, S·block) of a chunk, masked, with the gathered queries and keys."""
    r, s, blk = sl.stop - sl.start, group.slots, c.block
    tiles_per_head = c.k5.shape[2]
    rows = group.head[sl] * c.nb + group.row[sl]
    cols = (group.head[sl, None] * tiles_per_head + group.cols[sl] + c.guard).flatten()
    d = c.q5.shape[-1]
    q = c.q5.view(c.outer, c.hm * c.nb, blk, d).index_select(1, rows).view(-1, blk, d)
    k = c.k5.view(c.outer, -1, blk, d).index_select(1, cols).view(-1, s * blk, d)
    scores = torch.bmm(q, k.transpose(1, 2))
    c.add_masks(scores, group, sl)
    if c.pad_bias is not None:
        # Padding depends on the batch element only: (B, 1, R, 1, S·block) over heads and queries.
        keys = c.pad_bias.index_select(1, (group.cols[sl] + c.guard).flatten()).view(c.batch, 1, r, 1, s * blk)
        scores.view(c.batch, c.outer // c.batch, r, blk, s * blk).add_(keys)
    return scores, q, k, rows, cols


def _forward_gathered(c: _Context, group: RowGroup, out5: Tensor) -> None:
    for sl in c.chunks(range(len(group.row)), group.slots, c.outer):
        scores, _, _, rows, cols = _gathered_scores(c, group, sl)
        dv = c.v5.shape[-1]
        v = c.v5.view(c.outer, -1, c.block, dv).index_select(1, cols).view(-1, group.slots * c.block, dv)
        out = torch.bmm(_softmax(scores, c.safe), v)
        out5.view(c.outer, c.hm * c.nb, c.block, dv).index_copy_(1, rows, out.view(c.outer, -1, c.block, dv))


def _backward_gathered(c: _Context, group: RowGroup, do5: Tensor, grads: tuple[Tensor, Tensor, Tensor]) -> None:
    dq5, dk5, dv5 = grads
    blk = c.block
    for sl in c.chunks(range(len(group.row)), group.slots, c.outer):
        scores, q, k, rows, cols = _gathered_scores(c, group, sl)
        probs = _softmax(scores, c.safe)
        dv = c.v5.shape[-1]
        v = c.v5.view(c.outer, -1, blk, dv).index_select(1, cols).view(-1, group.slots * blk, dv)
        do = do5.view(c.outer, c.hm * c.nb, blk, dv).index_select(1, rows).view(-1, blk, dv)
        per_slot = (c.outer, len(cols), -1)
        dv5.view(c.outer, -1, blk * dv).index_add_(1, cols, torch.bmm(probs.transpose(1, 2), do).view(per_slot))
        ds = _softmax_backward(torch.bmm(do, v.transpose(1, 2)), probs)
        d = q.shape[-1]
        dq5.view(c.outer, c.hm * c.nb, blk, d).index_copy_(1, rows, torch.bmm(ds, k).view(c.outer, -1, blk, d))
        dk5.view(c.outer, -1, blk * d).index_add_(1, cols, torch.bmm(ds.transpose(1, 2), q).view(per_slot))


# ------------------------------------------------------------------------------------------------


class BlockSparseAttention(torch.autograd.Function):
    """Exact attention over the tiles of a :class:`BlockLayout` (see the module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, layout: BlockLayout, scale: float):  # type: ignore[override]
        c = _Context(q, k, v, key_padding_mask, layout, scale)
        out5 = c.rows_buffer(v.shape[-1])
        for group in layout.groups:
            (_forward_windowed if group.windowed else _forward_gathered)(c, group, out5)
        ctx.save_for_backward(q, k, v, key_padding_mask)
        ctx.layout, ctx.scale = layout, scale
        return c.untile(out5)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, key_padding_mask = ctx.saved_tensors
        c = _Context(q, k, v, key_padding_mask, ctx.layout, ctx.scale)
        do5 = c.tiles(grad_out)
        grads = (c.rows_buffer(q.shape[-1]), torch.zeros_like(c.k5), torch.zeros_like(c.v5))
        for group in ctx.layout.groups:
            (_backward_windowed if group.windowed else _backward_gathered)(c, group, do5, grads)
        dq5, dk5, dv5 = grads
        return (c.untile(dq5) * ctx.scale, c.untile(dk5, guards=True), c.untile(dv5, guards=True),
                None, None, None)


def block_sparse_attention(
    q: Tensor, k: Tensor, v: Tensor, layout: BlockLayout, *, scale: float, key_padding_mask: Tensor | None = None
) -> Tensor:
    """Exact attention restricted to ``layout`` (self-attention, queries and keys of equal length)."""
    return BlockSparseAttention.apply(q, k, v, key_padding_mask, layout, scale)


__all__ = ["BlockLayout", "RowGroup", "block_sparse_attention", "build_layout"]
