"""Softmax attention of sorted query chunks over key windows, in O(N) memory (one LSH round).

Reformer sorts positions by hash bucket, cuts the sorted order into chunks of ``C`` and lets each
query chunk attend to a *window*: the previous key chunk and its own (the first chunk of a
sequence looks at the last one). This module computes that attention straight from the unsorted
rows of ``q``, ``k``, ``v`` and integer row indices, without materialising sorted copies or the
(chunks, C, 2C) scores:

* ``q_rows`` (S, C): the rows of ``q`` in each *slot* (a query chunk);
* ``k_rows`` (S + 1, C) with look-back, (S, C) without: the rows of ``k`` / ``v`` in each key
  chunk; slot ``s`` attends to key chunks ``s`` and ``s + 1`` (look-back) or ``s`` alone.

With the look-back layout a block of consecutive slots needs one gathered run of key chunks, and
each window is a strided, overlapping *view* into it, so every key row is gathered about once per
round instead of twice. Blocks are cache-sized; outputs are written in slot order into one
buffer (the caller unsorts them). The backward pass re-gathers and recomputes the scores (like
FlashAttention) instead of saving them, so training memory is O(N·D) per round, not O(N·C).

Masks come from positions: flat row ``r`` is position ``r % n_pos``. A key is allowed when it is
valid (not padding), not after the query (causal), and — with ``exclude_self`` (shared-QK) — a
query's own position gets the fixed score :data:`SELF_SCORE`, so it is attended only when nothing
else is. A query with no allowed key gets output 0 and log-sum-exp :data:`EMPTY_LSE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: Score of a masked key: finite, so a row of masked keys gives no NaN (it is zeroed instead).
MASKED_SCORE = -1.0e30
#: Log-sum-exp reported for a query without any allowed key.
EMPTY_LSE = -1.0e30
#: Score of a query's own key under shared-QK (Reformer's -1e5): used only if nothing else is.
SELF_SCORE = -1.0e5
#: Elements of the (block, C, W) score tensor processed at once (1 MiB in float32: cache-sized).
BLOCK_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class WindowSpec:
    """How one call masks its scores."""

    n_pos: int  # padded sequence length: flat row r is position r % n_pos
    scale: float
    causal: bool
    q_offset: int
    exclude_self: bool
    lookback: bool  # windows span two key chunks (the previous and the own one)
    # Queries and keys share one sort order, so a query's own key sits on the diagonal of the
    # window's own-chunk half: the self mask needs no position comparisons.
    self_on_diagonal: bool = False


class _Block:
    """The gathered rows and masked scores of slots [start, stop)."""

    def __init__(self, q: Tensor, k: Tensor, v: Tensor, q_rows: Tensor, k_rows: Tensor,
                 valid: Tensor | None, spec: WindowSpec, start: int, stop: int) -> None:
        blk, c = stop - start, q_rows.shape[1]
        self.q_index = q_rows[start:stop].reshape(-1)  # (blk·C,)
        # Scaling the gathered queries (C·D per chunk) is cheaper than the scores (C·W).
        self.qb = q.index_select(0, self.q_index).view(blk, c, -1).mul_(spec.scale)  # (blk, C, D)
        if spec.lookback:
            self.k_index = k_rows[start : stop + 1].reshape(-1)  # ((blk+1)·C,)
            w = 2 * c
            kbuf = k.index_select(0, self.k_index)
            vbuf = v.index_select(0, self.k_index)
            # Overlapping windows: slot i sees gathered chunks i and i+1.
            self.kw = kbuf.as_strided((blk, w, kbuf.shape[1]), (c * kbuf.shape[1], kbuf.shape[1], 1))
            self.vw = vbuf.as_strided((blk, w, vbuf.shape[1]), (c * vbuf.shape[1], vbuf.shape[1], 1))
            k_window_rows = self.k_index.as_strided((blk, w), (c, 1))
        else:
            self.k_index = k_rows[start:stop].reshape(-1)
            w = c
            self.kw = k.index_select(0, self.k_index).view(blk, w, -1)
            self.vw = v.index_select(0, self.k_index).view(blk, w, -1)
            k_window_rows = self.k_index.view(blk, w)
        self.blk, self.c, self.w = blk, c, w
        scores = torch.bmm(self.qb, self.kw.transpose(1, 2))  # (blk, C, W)
        allowed = None
        if valid is not None:
            allowed = valid[k_window_rows][:, None, :]  # (blk, 1, W)
        self.self_mask: Tensor | str | None = None
        diagonal_self = spec.exclude_self and spec.self_on_diagonal
        if spec.causal or (spec.exclude_self and not diagonal_self):
            pos_q = (self.q_index.view(blk, c) % spec.n_pos)[:, :, None]  # (blk, C, 1)
            pos_k = (k_window_rows % spec.n_pos)[:, None, :]  # (blk, 1, W)
            if spec.causal:
                causal = pos_k <= pos_q + spec.q_offset
                allowed = causal if allowed is None else allowed & causal
            if spec.exclude_self and not diagonal_self:
                self.self_mask = pos_k == pos_q if allowed is None else (pos_k == pos_q) & allowed
        if diagonal_self:
            # Own key = diagonal of the own-chunk half (the last C columns); set before masking,
            # so a padded own key still ends up masked.
            scores.diagonal(offset=w - c, dim1=1, dim2=2).fill_(SELF_SCORE)
            self.self_mask = "diagonal"
        if allowed is not None:
            scores.masked_fill_(~allowed, MASKED_SCORE)
        if isinstance(self.self_mask, Tensor):
            scores.masked_fill_(self.self_mask, SELF_SCORE)
        self.scores = scores

    def fold_keys(self, window_grad: Tensor) -> Tensor:
        """Sum a (blk, W, E) window gradient onto the gathered key rows: (len(k_index), E)."""
        if self.w == self.c:  # no look-back: windows do not overlap
            return window_grad.reshape(-1, window_grad.shape[-1])
        e = window_grad.shape[-1]
        folded = window_grad.new_zeros(self.blk + 1, self.c, e)
        folded[:-1] += window_grad[:, : self.c]
        folded[1:] += window_grad[:, self.c :]
        return folded.view(-1, e)


def _block_starts(n_slots: int, c: int, w: int) -> range:
    return range(0, n_slots, max(1, BLOCK_ELEMENTS // (c * w)))


class SortedWindowAttention(torch.autograd.Function):
    """(out (S·C, Dv), lse (S·C,)) in slot order; see the module docstring."""

    @staticmethod
    def forward(ctx, q, k, v, q_rows, k_rows, valid, spec: WindowSpec):  # type: ignore[override]
        n_slots, c = q_rows.shape
        w = 2 * c if spec.lookback else c
        out = q.new_empty(n_slots * c, v.shape[-1])
        lse = q.new_empty(n_slots * c)
        for start in _block_starts(n_slots, c, w):
            stop = min(n_slots, start + max(1, BLOCK_ELEMENTS // (c * w)))
            block = _Block(q, k, v, q_rows, k_rows, valid, spec, start, stop)
            scores = block.scores
            row_max = scores.amax(dim=-1, keepdim=True)  # (blk, C, 1)
            probs = torch.softmax(scores, dim=-1)
            # lse = max − log(p_max): the largest probability is 1 / Σ exp(s − max).
            block_lse = (row_max - probs.amax(dim=-1, keepdim=True).log_()).view(-1)
            empty = row_max.view(-1) <= MASKED_SCORE / 2
            if bool(empty.any()):
                probs.masked_fill_(empty.view(-1, c, 1), 0.0)
                block_lse.masked_fill_(empty, EMPTY_LSE)
            rows = slice(start * c, stop * c)
            torch.bmm(probs, block.vw, out=out[rows].view(stop - start, c, -1))  # (blk, C, Dv)
            lse[rows] = block_lse
        ctx.save_for_backward(q, k, v, q_rows, k_rows, valid, out, lse)
        ctx.spec = spec
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):  # type: ignore[override]
        q, k, v, q_rows, k_rows, valid, out, lse = ctx.saved_tensors
        spec: WindowSpec = ctx.spec
        n_slots, c = q_rows.shape
        w = 2 * c if spec.lookback else c
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out.contiguous()
        grad_lse = torch.zeros_like(lse) if grad_lse is None else grad_lse
        # Softmax backward row term Δ = Σ_d dO·O, minus dlse since d lse / d s = p.
        delta = (grad_out * out).sum(dim=-1) - grad_lse  # (S·C,)
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for start in _block_starts(n_slots, c, w):
            stop = min(n_slots, start + max(1, BLOCK_ELEMENTS // (c * w)))
            block = _Block(q, k, v, q_rows, k_rows, valid, spec, start, stop)
            rows = slice(start * c, stop * c)
            block_lse = lse[rows].view(-1, c, 1)
            probs = block.scores.sub_(block_lse).exp_()  # masked keys -> 0
            probs.masked_fill_(block_lse <= EMPTY_LSE / 2, 0.0)  # empty rows -> 0
            d_out = grad_out[rows].view(-1, c, grad_out.shape[-1])  # (blk, C, Dv)
            dv.index_add_(0, block.k_index, block.fold_keys(torch.bmm(probs.transpose(1, 2), d_out)))
            d_scores = torch.bmm(d_out, block.vw.transpose(1, 2))  # dP (blk, C, W)
            d_scores.sub_(delta[rows].view(-1, c, 1)).mul_(probs)
            if isinstance(block.self_mask, Tensor):  # the self score is a constant: no gradient
                d_scores.masked_fill_(block.self_mask, 0.0)
            elif block.self_mask == "diagonal":
                d_scores.diagonal(offset=block.w - block.c, dim1=1, dim2=2).zero_()
            # scores = (scale·q)·kᵀ: block.qb already carries the scale, dq gets it here.
            dq.index_add_(0, block.q_index, torch.bmm(d_scores, block.kw).view(-1, q.shape[-1]), alpha=spec.scale)
            dk.index_add_(0, block.k_index, block.fold_keys(torch.bmm(d_scores.transpose(1, 2), block.qb)))
        return dq, dk, dv, None, None, None, None


def sorted_window_attention(
    q: Tensor, k: Tensor, v: Tensor, q_rows: Tensor, k_rows: Tensor, valid: Tensor | None, spec: WindowSpec
) -> tuple[Tensor, Tensor]:
    """Differentiable (out, lse) in slot order for flat q, k (rows, D), v (rows, Dv)."""
    return SortedWindowAttention.apply(q, k, v, q_rows, k_rows, valid, spec)  # type: ignore[no-any-return]
