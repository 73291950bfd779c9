"""The kernel of memory-efficient attention: scores in (query chunk × key chunk) tiles.

Forward (Rabe & Staats 2021; Milakov & Gimelshein's online softmax): for each query chunk, walk
the key chunks keeping a running row maximum ``m``, row sum ``l`` and unnormalised output; the
result and the per-row log-sum-exp ``lse = m + log l`` are all that is kept.

Backward (FlashAttention-2): recompute each tile's probabilities from ``lse``, then
``dV += Pᵀ dO``, ``dP = dO Vᵀ``, ``dS = P ∘ (dP − rowsum(dO ∘ O))``, ``dQ += dS K·scale``,
``dK += dSᵀ Q·scale``. Memory is O(N · chunk) in both passes: no (Nq, Nk) tensor is ever formed.

Tiles (:mod:`polyformer.attention.kernels.tiles`) are 3-D ``(G·H, n, m)`` tensors for a group of G batch
rows so that every product is one batched ``bmm`` on contiguous chunks; tile buffers are allocated
once and reused (fresh large allocations cost page faults on every tile).

Two CPU performance traps shape the elementwise steps (both measured, each a 10-300x slowdown):

* PyTorch's CPU ``exp`` takes a slow path for arguments below about −87 (underflow, and −inf at
  masked keys), which a far-away ALiBi bias or a padding mask hits on most of a tile. Tiles
  therefore hold scores in base 2 (``score · log2 e``, folded into the scale of q·kᵀ) and use
  ``exp2``, which is fast for normal results and −inf. Only the internal row maximum and
  log-sum-exp are in base 2; probabilities and gradients are the same.
* Subnormal numbers (probabilities below ~1e-38) make every later multiplication crawl, matrix
  products included. Probabilities below 2^27 × the smallest normal number (2^-99 in float32)
  are set to exactly 0 before ``exp2`` (``threshold_``): a relative change below 1e-30 that
  keeps every tile normal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from polyformer.attention.kernels.tiles import (
    NEG_INF,
    KernelConfig,
    TileScorer,
    batch_groups,
    contiguous_view,
    tile_buffer,
)
from polyformer.attention.score_mods import ScoreBias, ScoreMod


def _exp2_normal_(x: Tensor) -> Tensor:
    """``2 ** x`` in place, with 0 wherever the result would be tiny enough to risk subnormals."""
    floor = math.log2(torch.finfo(x.dtype).tiny) + 27  # -99 for float32, -995 for float64
    return torch.nn.functional.threshold_(x, floor, NEG_INF).exp2_()


def chunked_forward(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, config: KernelConfig
) -> tuple[Tensor, Tensor]:
    """Output (B, H, Nq, Dv) and row log-sum-exp in base 2 (B, H, Nq, 1); +inf marks a row with
    no allowed key."""
    batch, heads, n_q, _ = q.shape
    d_v = v.shape[-1]
    out = q.new_empty(batch, heads, n_q, d_v)
    lse = q.new_empty(batch, heads, n_q, 1)
    for b0, b1 in batch_groups(batch, heads, config):
        scorer = TileScorer(q, k, bias, config, b0, b1)
        rows = (b1 - b0) * heads
        v3 = v[b0:b1].view(rows, scorer.n_k, d_v)  # (G·H, Nk, Dv)
        out3 = out[b0:b1].view(rows, n_q, d_v)
        lse3 = lse[b0:b1].view(rows, n_q, 1)
        buffer = tile_buffer(q, b1 - b0, heads, config)
        for qs in range(0, n_q, config.q_chunk):
            qe = min(qs + config.q_chunk, n_q)
            row_max = q.new_full((rows, qe - qs, 1), NEG_INF)
            row_sum = q.new_zeros(rows, qe - qs, 1)
            acc = q.new_zeros(rows, qe - qs, d_v)
            safe_max = q.new_zeros(rows, qe - qs, 1)
            for ks in range(0, scorer.key_end(qe), config.k_chunk):
                ke = min(ks + config.k_chunk, scorer.key_end(qe))
                if scorer.key_chunk_is_empty(ks):
                    continue
                s = scorer.scores(qs, qe, ks, ke, buffer)  # (G·H, n, m)
                new_max = torch.maximum(row_max, s.amax(dim=-1, keepdim=True))
                # A row with no allowed key so far keeps max −inf: subtract 0 there, not −inf.
                safe_max = new_max.masked_fill(new_max == NEG_INF, 0.0)
                p = _exp2_normal_(s.sub_(safe_max))
                correction = _exp2_normal_(row_max - safe_max)  # rescales what was accumulated so far
                row_sum.mul_(correction).add_(p.sum(dim=-1, keepdim=True))
                acc.mul_(correction).baddbmm_(p, v3[:, ks:ke])
                row_max = new_max
            empty = row_sum == 0
            out3[:, qs:qe] = acc / row_sum.masked_fill(empty, 1.0)
            lse3[:, qs:qe] = (safe_max + row_sum.log2()).masked_fill_(empty, float("inf"))
    return out, lse


def _row_dot(d_out: Tensor, out: Tensor, chunk: int) -> Tensor:
    """rowsum(dO ∘ O) as (B, H, Nq, 1), a chunk of rows at a time (no full-size product)."""
    delta = out.new_empty(*out.shape[:-1], 1)
    for start in range(0, out.shape[2], chunk):
        rows = slice(start, start + chunk)
        delta[:, :, rows] = (d_out[:, :, rows] * out[:, :, rows]).sum(-1, keepdim=True)
    return delta


def chunked_backward(
    d_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    bias: Tensor | None,
    config: KernelConfig,
    needs: tuple[bool, bool, bool, bool],
    leaves: list[Tensor],
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None, list[Tensor]]:
    """Gradients of q, k, v, bias (where ``needs`` says so) and of the score function's leaves."""
    need_q, need_k, need_v, need_bias = needs
    d_out = d_out.contiguous()
    grads = _Gradients(
        delta=_row_dot(d_out, out, config.q_chunk),
        dq=torch.zeros_like(q) if need_q else None,
        dk=torch.zeros_like(k) if need_k else None,
        dv=torch.zeros_like(v) if need_v else None,
        dbias=torch.zeros_like(bias) if need_bias and bias is not None else None,
        leaves=leaves,
        leaf_grads=[torch.zeros_like(leaf) for leaf in leaves],
    )
    for b0, b1 in batch_groups(q.shape[0], q.shape[1], config):
        _backward_group(TileScorer(q, k, bias, config, b0, b1), v, d_out, lse, grads, b0, b1)
    return grads.dq, grads.dk, grads.dv, grads.dbias, grads.leaf_grads


@dataclass
class _Gradients:
    """The gradients being accumulated, plus rowsum(dO ∘ O) (B, H, Nq, 1)."""

    delta: Tensor
    dq: Tensor | None
    dk: Tensor | None
    dv: Tensor | None
    dbias: Tensor | None
    leaves: list[Tensor]
    leaf_grads: list[Tensor]

    @property
    def need_ds(self) -> bool:
        return self.dq is not None or self.dk is not None or self.dbias is not None or bool(self.leaves)


def _backward_group(
    scorer: TileScorer, v: Tensor, d_out: Tensor, lse: Tensor, grads: _Gradients, b0: int, b1: int
) -> None:
    """Backward for batch rows [b0, b1): key chunks outside, query chunks inside."""
    config = scorer.config
    groups, heads = scorer.groups, scorer.heads
    rows, n_q, n_k, d = groups * heads, scorer.n_q, scorer.n_k, scorer.q.shape[-1]
    d_v = v.shape[-1]

    def group_view(t: Tensor | None, n: int, last: int) -> Tensor | None:
        return t[b0:b1].view(rows, n, last) if t is not None else None

    v3, do3 = group_view(v, n_k, d_v), group_view(d_out, n_q, d_v)
    lse3, delta3 = group_view(lse, n_q, 1), group_view(grads.delta, n_q, 1)
    dq3, dk3 = group_view(grads.dq, n_q, d), group_view(grads.dk, n_k, d)
    dv3 = group_view(grads.dv, n_k, d_v)
    dbias = grads.dbias
    if dbias is not None and dbias.shape[0] > 1:
        dbias = dbias[b0:b1]
    # Products go into contiguous buffers: in-place bmm into a slice of a larger tensor falls back
    # to one matrix product per batch row, which is markedly slower.
    s_buffer = tile_buffer(v, groups, heads, config)
    dp_buffer = tile_buffer(v, groups, heads, config)
    dq_buffer = v.new_empty(rows * config.q_chunk * d)
    dk_buffer = v.new_empty(rows * config.k_chunk * d)
    dv_buffer = v.new_empty(rows * config.k_chunk * d_v)
    for ks in range(0, n_k, config.k_chunk):
        ke = min(ks + config.k_chunk, n_k)
        m = ke - ks
        if scorer.key_chunk_is_empty(ks):
            continue
        dk_c = contiguous_view(dk_buffer, rows, m, d).zero_()
        dv_c = contiguous_view(dv_buffer, rows, m, d_v).zero_()
        first = scorer.first_query(ks) // config.q_chunk * config.q_chunk
        for qs in range(first, n_q, config.q_chunk):
            qe = min(qs + config.q_chunk, n_q)
            n = qe - qs
            s, pull = scorer.scores_for_backward(qs, qe, ks, ke, s_buffer, grads.leaves, grads.leaf_grads)
            p = _exp2_normal_(s.sub_(lse3[:, qs:qe]))  # (G·H, n, m) probabilities; 0 in empty rows
            if dv3 is not None:
                dv_c.baddbmm_(p.transpose(1, 2), do3[:, qs:qe])
            if not grads.need_ds:
                continue
            dp = contiguous_view(dp_buffer, rows, n, m)
            torch.bmm(do3[:, qs:qe], v3[:, ks:ke].transpose(1, 2), out=dp)
            ds = pull(dp.sub_(delta3[:, qs:qe]).mul_(p))  # dL/d(q·kᵀ·scale + bias)
            if dbias is not None:
                _accumulate_bias_grad(dbias, ds.view(groups, heads, n, m), qs, qe, ks, ke)
            if dq3 is not None:
                tile = torch.bmm(ds, scorer.k[:, ks:ke], out=contiguous_view(dq_buffer, rows, n, d))
                dq3[:, qs:qe].add_(tile, alpha=config.scale)
            if dk3 is not None:
                dk_c.baddbmm_(ds.transpose(1, 2), scorer.q[:, qs:qe], alpha=config.scale)
        if dk3 is not None:
            dk3[:, ks:ke] = dk_c
        if dv3 is not None:
            dv3[:, ks:ke] = dv_c


def _accumulate_bias_grad(dbias: Tensor, ds: Tensor, qs: int, qe: int, ks: int, ke: int) -> None:
    """Add the tile gradient ``ds`` (G, H, n, m) to ``dbias``, summed over its broadcast dims."""
    rows = slice(qs, qe) if dbias.shape[2] > 1 else slice(None)
    cols = slice(ks, ke) if dbias.shape[3] > 1 else slice(None)
    dims = [i for i in range(4) if dbias.shape[i] == 1 and ds.shape[i] > 1]
    dbias[:, :, rows, cols] += ds.sum(dim=dims, keepdim=True) if dims else ds


class ChunkedAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: saves q, k, v, the output and the row log-sum-exp; recomputes tiles."""

    @staticmethod
    def forward(ctx, q, k, v, bias, config: KernelConfig, *leaves):  # type: ignore[override]
        out, lse = chunked_forward(q, k, v, bias, config)
        ctx.config = config
        ctx.has_bias = bias is not None
        ctx.save_for_backward(q, k, v, out, lse, *([bias] if bias is not None else []), *leaves)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out):  # type: ignore[override]
        q, k, v, out, lse, *rest = ctx.saved_tensors
        bias = rest.pop(0) if ctx.has_bias else None
        leaves = rest
        needs = tuple(ctx.needs_input_grad[:4])
        dq, dk, dv, dbias, leaf_grads = chunked_backward(
            d_out, q, k, v, out, lse, bias, ctx.config, needs, leaves  # type: ignore[arg-type]
        )
        leaf_grads = [g if need else None for g, need in zip(leaf_grads, ctx.needs_input_grad[5:])]
        return dq, dk, dv, dbias, None, *leaf_grads


def is_additive(score_mod: ScoreMod | None, leaves: list[Tensor]) -> bool:
    """Whether the kernel may add ``score_mod`` in place without autograd."""
    return isinstance(score_mod, ScoreBias) and not leaves
