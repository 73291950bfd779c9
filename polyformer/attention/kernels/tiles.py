"""Score tiles of memory-efficient attention: one (query chunk × key chunk) block at a time.

A tile is a 3-D ``(G·H, n, m)`` tensor for a group of G batch rows, so that the products of the
kernel are batched ``bmm`` calls on contiguous chunks. Tiles hold scores in base 2
(``score · log2 e``): see :mod:`polyformer.attention.kernels.chunked_kernel` for why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from polyformer.attention.score_mods import ScoreBias, ScoreMod
from polyformer.errors import ShapeError

NEG_INF = float("-inf")
LOG2E = math.log2(math.e)

#: Upper bound on the elements of one score tile buffer; more batch rows are grouped into a tile
#: only while the tile stays below it (memory stays bounded for large batch × heads).
TILE_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class KernelConfig:
    """Everything about a call except the tensors that need gradients."""

    scale: float
    causal: bool
    q_offset: int
    q_chunk: int
    k_chunk: int
    key_padding_mask: Tensor | None  # (B, Nk) bool, True = real token
    score_mod: ScoreMod | None
    score_mod_is_additive: bool  # a parameter-free ScoreBias: added in place, no autograd needed


class TileScorer:
    """Builds score tiles ``(G·H, n, m)`` for batch rows ``[b0, b1)``: q·kᵀ·scale + bias, the score
    function, then −inf at masked keys (causal, padding)."""

    def __init__(
        self, q: Tensor, k: Tensor, bias: Tensor | None, config: KernelConfig, b0: int, b1: int
    ) -> None:
        _, heads, self.n_q, head_dim = q.shape
        self.n_k = k.shape[2]
        self.groups, self.heads = b1 - b0, heads
        self.q = q[b0:b1].view(self.groups * heads, self.n_q, head_dim)  # (G·H, Nq, D)
        self.k = k[b0:b1].view(self.groups * heads, self.n_k, head_dim)  # (G·H, Nk, D)
        self.config = config
        self.bias = bias[b0:b1] if bias is not None and bias.shape[0] > 1 else bias
        device = q.device
        self.b_idx = torch.arange(b0, b1, device=device).view(-1, 1, 1, 1)
        self.h_idx = torch.arange(heads, device=device).view(1, -1, 1, 1)
        self.q_pos = torch.arange(self.n_q, device=device) + config.q_offset
        self.k_pos = torch.arange(self.n_k, device=device)
        self.padding: Tensor | None = None  # (G, 1, 1, Nk) True = padding
        self._chunk_padded: list[bool] = []  # per key chunk: any padding
        self._chunk_empty: list[bool] = []  # per key chunk: nothing but padding
        if config.key_padding_mask is not None:
            padding = ~config.key_padding_mask[b0:b1]
            self.padding = padding.view(self.groups, 1, 1, self.n_k)
            for ks in range(0, self.n_k, config.k_chunk):
                chunk = padding[:, ks : ks + config.k_chunk]
                self._chunk_padded.append(bool(chunk.any()))
                self._chunk_empty.append(bool(chunk.all()))

    # -- which tiles exist ------------------------------------------------------------------------
    def key_end(self, qe: int) -> int:
        """One past the last key any query before row ``qe`` may see."""
        if not self.config.causal:
            return self.n_k
        return max(0, min(self.n_k, self.config.q_offset + qe))

    def first_query(self, ks: int) -> int:
        """The first query row that may see key ``ks``."""
        if not self.config.causal:
            return 0
        return max(0, min(self.n_q, ks - self.config.q_offset))

    def key_chunk_is_empty(self, ks: int) -> bool:
        """True when every key of the chunk starting at ``ks`` is padding (the tile is skipped)."""
        return bool(self._chunk_empty) and self._chunk_empty[ks // self.config.k_chunk]

    # -- building a tile --------------------------------------------------------------------------
    def _indices(self, qs: int, qe: int, ks: int, ke: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        q_idx = self.q_pos[qs:qe].view(1, 1, -1, 1)
        kv_idx = self.k_pos[ks:ke].view(1, 1, 1, -1)
        return self.b_idx, self.h_idx, q_idx, kv_idx

    def raw(self, qs: int, qe: int, ks: int, ke: int, out: Tensor, factor: float) -> Tensor:
        """``factor`` × (q·kᵀ·scale + bias + an additive score function), written into ``out``.

        Returns the (G·H, n, m) tile; ``factor`` is LOG2E for base-2 tiles, 1 for natural units.
        """
        s = contiguous_view(out, self.groups * self.heads, qe - qs, ke - ks)
        s.baddbmm_(
            self.q[:, qs:qe], self.k[:, ks:ke].transpose(1, 2), beta=0.0, alpha=self.config.scale * factor
        )
        s4 = s.view(self.groups, self.heads, qe - qs, ke - ks)
        if self.bias is not None:
            rows = slice(qs, qe) if self.bias.shape[2] > 1 else slice(None)
            cols = slice(ks, ke) if self.bias.shape[3] > 1 else slice(None)
            s4.add_(self.bias[:, :, rows, cols], alpha=factor)
        if self.config.score_mod_is_additive:
            score_bias: ScoreBias = self.config.score_mod  # type: ignore[assignment]
            score_bias.add_to_(s4, *self._indices(qs, qe, ks, ke), alpha=factor)
        return s

    def mask_(self, s: Tensor, qs: int, qe: int, ks: int, ke: int) -> Tensor:
        """Set masked scores of tile ``s`` (G·H, n, m) to −inf in place."""
        if self.config.causal and ke - 1 > self.config.q_offset + qs:  # the tile crosses the diagonal
            s.masked_fill_(self.k_pos[ks:ke][None, :] > self.q_pos[qs:qe][:, None], NEG_INF)
        if self.padding is not None and self._chunk_padded[ks // self.config.k_chunk]:
            n, m = qe - qs, ke - ks
            s.view(self.groups, self.heads, n, m).masked_fill_(self.padding[..., ks:ke], NEG_INF)
        return s

    def apply_score_mod(self, s: Tensor, qs: int, qe: int, ks: int, ke: int) -> Tensor:
        """``score_mod`` on tile ``s`` (G·H, n, m), returned as a (G, H, n, m) tensor (autograd-aware)."""
        shape = (self.groups, self.heads, qe - qs, ke - ks)
        modified = self.config.score_mod(s.view(shape), *self._indices(qs, qe, ks, ke))  # type: ignore[misc]
        if not isinstance(modified, Tensor):
            raise ShapeError(f"score_mod must return a Tensor, got {type(modified).__name__}")
        if modified.shape != shape:
            try:
                modified = modified.expand(shape)
            except RuntimeError:
                raise ShapeError(
                    f"score_mod returned shape {tuple(modified.shape)} for a score tile of shape "
                    f"{shape}; it must return a tensor broadcastable to the tile"
                ) from None
        return modified

    def _general_score_mod(self) -> bool:
        return self.config.score_mod is not None and not self.config.score_mod_is_additive

    def scores(self, qs: int, qe: int, ks: int, ke: int, out: Tensor) -> Tensor:
        """The finished base-2 tile (G·H, n, m) without autograd: every step, masks included."""
        if not self._general_score_mod():
            return self.mask_(self.raw(qs, qe, ks, ke, out, LOG2E), qs, qe, ks, ke)
        s = self.raw(qs, qe, ks, ke, out, 1.0)
        modified = self.apply_score_mod(s, qs, qe, ks, ke).reshape(s.shape)
        return self.mask_(torch.mul(modified, LOG2E, out=s), qs, qe, ks, ke)

    def scores_for_backward(
        self, qs: int, qe: int, ks: int, ke: int, out: Tensor, leaves: list[Tensor], leaf_grads: list[Tensor]
    ) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """The finished base-2 tile, and a function taking dL/d(score) to dL/d(q·kᵀ·scale + bias)
        (scores in natural units, i.e. after / before the score function).

        With a general score function the tile is recomputed under autograd; pulling a gradient
        back through it also accumulates the gradients of the tensors it captured (``leaves``).
        """
        if not self._general_score_mod():
            return self.mask_(self.raw(qs, qe, ks, ke, out, LOG2E), qs, qe, ks, ke), lambda ds: ds
        s = self.raw(qs, qe, ks, ke, out, 1.0)
        raw = s.detach().requires_grad_(True)
        with torch.enable_grad():
            modified = self.apply_score_mod(raw, qs, qe, ks, ke)
        # A new tensor: the score function's graph may have saved `raw` (the buffer) or its output.
        finished = self.mask_(modified.detach().reshape(s.shape) * LOG2E, qs, qe, ks, ke)

        def pull(ds: Tensor) -> Tensor:
            # retain_graph: the score function may use tensors computed outside (slopes =
            # softplus(raw)) whose graph every tile goes back through.
            grads = torch.autograd.grad(
                modified, [raw, *leaves], ds.view(modified.shape), retain_graph=True, allow_unused=True
            )
            for acc, grad in zip(leaf_grads, grads[1:]):
                if grad is not None:
                    acc.add_(grad)
            return grads[0] if grads[0] is not None else torch.zeros_like(ds)

        return finished, pull


def batch_groups(batch: int, heads: int, config: KernelConfig) -> list[tuple[int, int]]:
    """Split the batch so that one tile (G·H, q_chunk, k_chunk) stays under TILE_ELEMENTS."""
    per_row = heads * config.q_chunk * config.k_chunk
    size = max(1, min(batch, TILE_ELEMENTS // max(per_row, 1)))
    return [(b0, min(batch, b0 + size)) for b0 in range(0, batch, size)]


def contiguous_view(buffer: Tensor, *shape: int) -> Tensor:
    """The first elements of a flat ``buffer`` viewed as a contiguous tensor of ``shape``."""
    return buffer[: math.prod(shape)].view(shape)


def tile_buffer(like: Tensor, groups: int, heads: int, config: KernelConfig) -> Tensor:
    """A flat buffer that holds one full tile (G·H, q_chunk, k_chunk)."""
    return like.new_empty(groups * heads * config.q_chunk * config.k_chunk)
