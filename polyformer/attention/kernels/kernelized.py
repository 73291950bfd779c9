"""The shared engine of ``linear`` and ``performer``: kernelized attention from feature maps.

Given non-negative features ``φq = φ(q)`` and ``φk = φ(k)`` it computes, for every query ``i``::

    out_i = Σ_j φq_iᵀ φk_j v_j  /  Σ_j φq_iᵀ φk_j        over the keys j that query i may see

in O(N) time and memory, by reordering the sums (Katharopoulos et al., 2020). Conventions:

* Padded keys must already have ``φk = 0``: then they add nothing to either sum.
* Empty rows: when the normaliser is exactly 0 (no key contributes) the output is **zeros**. The
  division is guarded only there (``den > 0 ? num / den : 0``, no epsilon), so the result does not
  depend on an arbitrary constant and stays invariant to rescaling φq or φk, which the Performer's
  numerical stabilisers rely on.
* The normaliser rides along as an extra column of ones appended to ``v``: one matmul yields
  numerator and denominator together, and the decoding state is one tensor
  ``S = Σ_j φk_j [v_j, 1]ᵀ`` of shape (B, H, F, Dv + 1).

Causal attention uses the *chunked* algorithm: inside a chunk of ``C`` positions the masked
product ``tril(φQ_c φK_cᵀ) V_c`` is computed exactly, and the keys of earlier chunks enter through
the running state ``S_{c-1}``, an exclusive cumulative sum of per-chunk states ``φK_cᵀ V_c``. All
chunks are processed at once by batched 3-D matmuls (no Python loop over chunks), so the cost is
O(N·C·(F + Dv) + N·F·Dv) time and O(N·C + (N/C)·F·Dv) memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from polyformer.attention.base import AttentionCache
from polyformer.errors import ShapeError


def append_ones(v: Tensor) -> Tensor:
    """``[v, 1]``: (..., Dv) -> (..., Dv + 1); the last column accumulates the normaliser."""
    return torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)


def divide_by_normaliser(out_aug: Tensor) -> Tensor:
    """Split ``[num, den]`` and return ``num / den``, with zeros where ``den == 0`` (empty rows)."""
    num, den = out_aug[..., :-1], out_aug[..., -1:]
    # den == 0 implies num == 0 (non-negative features), so the 1 only avoids 0/0 = NaN.
    return num / torch.where(den > 0, den, torch.ones_like(den))


def key_state(phi_k: Tensor, v_aug: Tensor) -> Tensor:
    """``Σ_j φk_j [v_j, 1]ᵀ`` over all keys: (B, H, N, F), (B, H, N, E) -> (B, H, F, E)."""
    b, h, n, f = phi_k.shape
    e = v_aug.shape[-1]
    k3 = phi_k.reshape(b * h, n, f)
    v3 = v_aug.reshape(b * h, n, e)
    return torch.bmm(k3.transpose(1, 2), v3).view(b, h, f, e)


def kernelized_attention(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    *,
    causal: bool,
    q_offset: int = 0,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Kernelized attention of ``phi_q`` (B, H, Nq, F) over ``phi_k`` (B, H, Nk, F), ``v`` (B, H, Nk, Dv).

    ``initial_state`` (B, H, F, Dv + 1) holds keys *before* position 0 that every query sees (the
    decoding state). With ``return_state`` the state after all ``Nk`` keys is returned as well.
    Causal: query ``i`` sits at position ``q_offset + i`` and sees keys ``j <= q_offset + i``.
    """
    b, h, n_q, f = phi_q.shape
    n_k = phi_k.shape[-2]
    v_aug = append_ones(v)  # (B, H, Nk, Dv + 1)
    e = v_aug.shape[-1]
    if not causal:
        state = key_state(phi_k, v_aug)  # (B, H, F, E)
        if initial_state is not None:
            state = state + initial_state
        out_aug = torch.bmm(phi_q.reshape(b * h, n_q, f), state.view(b * h, f, e)).view(b, h, n_q, e)
        out = divide_by_normaliser(out_aug)
        return (out, state) if return_state else out

    # Align keys with queries: keys before q_offset are seen by every query (they join the initial
    # state); keys after the last query's position are never seen; a negative offset means the
    # first -q_offset queries see no key at all (zero keys are prepended).
    if q_offset >= 0:
        prefix_end = min(q_offset, n_k)
        state0 = initial_state
        if prefix_end > 0:
            prefix = key_state(phi_k[:, :, :prefix_end], v_aug[:, :, :prefix_end])
            state0 = prefix if state0 is None else state0 + prefix
        k_aligned = phi_k[:, :, prefix_end : prefix_end + n_q]
        v_aligned = v_aug[:, :, prefix_end : prefix_end + n_q]
    else:
        state0 = initial_state
        k_aligned = F.pad(phi_k, (0, 0, -q_offset, 0))[:, :, :n_q]
        v_aligned = F.pad(v_aug, (0, 0, -q_offset, 0))[:, :, :n_q]
    missing = n_q - k_aligned.shape[-2]
    if missing > 0:  # fewer keys than queries after the offset: the rest see only earlier keys
        k_aligned = F.pad(k_aligned, (0, 0, 0, missing))
        v_aligned = F.pad(v_aligned, (0, 0, 0, missing))
    out_aug = chunked_causal(
        phi_q.reshape(b * h, n_q, f),
        k_aligned.reshape(b * h, n_q, f),
        v_aligned.reshape(b * h, n_q, e),
        None if state0 is None else state0.reshape(b * h, f, e),
        chunk_size,
    ).view(b, h, n_q, e)
    out = divide_by_normaliser(out_aug)
    if not return_state:
        return out
    state = key_state(phi_k, v_aug)
    if initial_state is not None:
        state = state + initial_state
    return out, state


def chunked_causal(q: Tensor, k: Tensor, v: Tensor, state0: Tensor | None, chunk_size: int) -> Tensor:
    """Σ_{j<=i} (qᵢᵀkⱼ) vⱼ (+ qᵢᵀ state0) for q, k (BH, N, F), v (BH, N, E): (BH, N, E).

    Every chunk at once: an exact lower-triangular product inside the chunk plus the queries times
    the state of all earlier chunks (an exclusive cumulative sum of per-chunk states).
    """
    bh, n, f = q.shape
    e = v.shape[-1]
    c = max(1, min(chunk_size, n))
    n_chunks = math.ceil(n / c)
    pad = n_chunks * c - n
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    q3 = q.reshape(bh * n_chunks, c, f)
    k3 = k.reshape(bh * n_chunks, c, f)
    v3 = v.reshape(bh * n_chunks, c, e)
    scores = torch.bmm(q3, k3.transpose(1, 2)).tril_()  # (BH·nc, C, C), keys after the query zeroed
    out = torch.bmm(scores, v3)  # (BH·nc, C, E): the exact part inside each chunk
    if n_chunks > 1 or state0 is not None:
        if n_chunks > 1:
            chunk_states = torch.bmm(k3.transpose(1, 2), v3).view(bh, n_chunks, f, e)
            before = torch.cumsum(chunk_states[:, :-1], dim=1)  # states after chunks 0..nc-2
            before = torch.cat([torch.zeros_like(before[:, :1]), before], dim=1)  # (BH, nc, F, E)
            if state0 is not None:
                before = before + state0[:, None]
        else:
            before = state0[:, None]  # type: ignore[index]
        out = torch.baddbmm(out, q3, before.reshape(bh * n_chunks, f, e))
    return out.view(bh, n_chunks * c, e)[:, :n]


class RecurrentState(AttentionCache):
    """Decoding state of a linearized mechanism: O(1) in the number of positions seen.

    ``state`` is ``S = Σ_j φ(k_j) [v_j, 1]ᵀ`` of shape (B, H, F, Dv + 1), the running sum of key
    features times values, with the normaliser ``z = Σ_j φ(k_j)`` as its last column.
    ``log_scale`` (B, H) is the stabiliser a mechanism divided the key features by, as
    ``exp(-log_scale)`` (the Performer; None for ``linear``). ``owner`` ties the state to the
    feature draw that produced it.
    """

    def __init__(self) -> None:
        self.state: Tensor | None = None
        self.log_scale: Tensor | None = None
        self.owner: object = None
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def advance(self, steps: int) -> None:
        """Count ``steps`` more positions as seen."""
        self._length += steps

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (e.g. to drop finished sequences)."""
        if self.state is not None:
            self.state = self.state[index]
        if self.log_scale is not None:
            self.log_scale = self.log_scale[index]


def new_key_mask(name: str, key_padding_mask: Tensor | None, cache_length: int, k: Tensor) -> Tensor | None:
    """The padding mask of the ``T`` new keys from a (B, len(cache) + T) mask; bool or None."""
    if key_padding_mask is None:
        return None
    batch, steps = k.shape[0], k.shape[-2]
    expected = (batch, cache_length + steps)
    if tuple(key_padding_mask.shape) != expected:
        raise ShapeError(
            f"attention {name!r}: forward_cached key_padding_mask must cover every key so far, "
            f"shape (batch, cached + new) = {expected}, got {tuple(key_padding_mask.shape)}"
        )
    return key_padding_mask[:, cache_length:] != 0
