"""Reformer attention (Kitaev et al., 2020): locality-sensitive hashing groups similar tokens.

Each of ``n_hashes`` rounds hashes queries and keys with angular LSH (a random rotation ``R``,
bucket = argmax([xR, −xR])), sorts positions by (bucket, position), cuts the sorted order into
chunks of ``bucket_size`` and lets every query chunk attend to its own key chunk and the previous
one (wrapping around). The rounds are combined by log-sum-exp, i.e. as one softmax over the keys
found in any round (a key found in r rounds counts r times, as in Reformer without duplicate
correction). Cost per round: O(N log N) for the sort and O(N·bucket_size·D) for attention.

Bounded hashing: the number of buckets grows with the length (about N / bucket_size, a power of
two), but the rotation does not. Beyond :data:`MAX_BUCKETS_PER_ROTATION` buckets the hash is
*factorised*: ``b = b₁·b₂·…`` with a separate small rotation per factor and the bucket id formed
from the digits (an AND of angular hashes). Hashing therefore costs O(N·D·log N), and the
rotations stay (D × 32)-sized at any length, where a single rotation would be D × N/(2·bucket_size).

``shared_qk``: keys are the unit-normalised ``k`` (Reformer shares the query/key projection and
passes ``k = q``), and a query does not attend to its own position unless no other key is
allowed (its score is fixed at −1e5).

Lengths that ``bucket_size`` does not divide are padded internally; a ``bucket_size`` of at
least the length gives one bucket, i.e. exact dense attention.

Queries and keys of different lengths (cross-attention, and decoding with the default key/value
cache, where one new query meets all cached keys) cannot be sorted into aligned chunks. There
each query attends *exactly* to the keys that share its bucket in each round (no chunk
approximation), still combined by log-sum-exp, in O(Nq·Nk) time (in blocks of queries, so memory
stays bounded). The bucket count then follows the number of keys, so a token's bucket can change
as the cache grows unless ``n_buckets`` is fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from polyformer.attention.kernels.lsh_kernel import (
    EMPTY_LSE,
    MASKED_SCORE,
    SELF_SCORE,
    WindowSpec,
    sorted_window_attention,
)
from polyformer.attention.base import AttentionMechanism
from polyformer.attention.reference import combine_masks
from polyformer.attention.registry import register
from polyformer.options import require

#: Largest bucket count one rotation produces (its matrix is D × 32); more buckets are factorised.
MAX_BUCKETS_PER_ROTATION = 64
#: Score elements per block when queries and keys differ in length (bucket matching).
_MATCH_BLOCK_ELEMENTS = 1 << 22
#: Output elements (rounds × rows × Dv) computed per kernel call: several rounds at once when short.
_ROUND_GROUP_ELEMENTS = 1 << 23
#: Projection elements per block of rows while hashing.
_HASH_BLOCK_ELEMENTS = 1 << 18


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class LSHOptions:
    """Options of ``lsh`` (Reformer) attention.

    ``bucket_size``: the chunk length, and about the average bucket size (the bucket count is
    the power of two nearest to N / bucket_size). ``n_hashes``: hashing rounds; more rounds find
    more of each query's near neighbours (closer to dense attention) at proportional cost.
    ``shared_qk``: Reformer's shared query/key (unit-normalised keys, no attention to oneself
    unless needed). ``n_buckets``: fix the bucket count (a power of two) instead of deriving it
    from the length. ``seed``: the random rotations' seed (the same seed hashes identically).
    """

    bucket_size: int = 64
    n_hashes: int = 4
    shared_qk: bool = False
    n_buckets: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        where = "attention 'lsh'"
        require(
            _is_int(self.bucket_size) and self.bucket_size >= 1,
            f"{where}: bucket_size must be an integer >= 1 (positions per chunk; any length "
            f"works, it is padded internally), got {self.bucket_size!r}",
        )
        require(
            _is_int(self.n_hashes) and self.n_hashes >= 1,
            f"{where}: n_hashes must be an integer >= 1 (hashing rounds), got {self.n_hashes!r}",
        )
        require(isinstance(self.shared_qk, bool), f"{where}: shared_qk must be True or False, got {self.shared_qk!r}")
        if self.n_buckets is not None:
            require(
                _is_int(self.n_buckets) and self.n_buckets >= 1 and self.n_buckets & (self.n_buckets - 1) == 0,
                f"{where}: n_buckets must be a power of two (1, 2, 4, ...) or None to follow the "
                f"length, got {self.n_buckets!r}",
            )
        require(_is_int(self.seed), f"{where}: seed must be an integer, got {self.seed!r}")


def plan_buckets(n_keys: int, bucket_size: int, n_buckets: int | None = None) -> tuple[int, ...]:
    """Factor sizes of the bucket count, each a power of two <= MAX_BUCKETS_PER_ROTATION.

    The count is ``n_buckets`` if given, else the power of two nearest to ``n_keys / bucket_size``
    (1 when the sequence fits one bucket: an empty tuple). Factors are as equal as possible.
    """
    if n_buckets is not None:
        exponent = int(math.log2(n_buckets))
    else:
        ratio = n_keys / bucket_size
        exponent = max(0, round(math.log2(ratio))) if ratio > 1 else 0
    if exponent == 0:
        return ()
    max_exponent = int(math.log2(MAX_BUCKETS_PER_ROTATION))
    parts = math.ceil(exponent / max_exponent)
    base, extra = divmod(exponent, parts)
    return tuple(2 ** (base + (1 if i < extra else 0)) for i in range(parts))


def draw_rotations(seed: int, n_hashes: int, head_dim: int, factors: tuple[int, ...]) -> Tensor:
    """(n_hashes, D, Σ f/2) float32 Gaussian rotations, a fixed function of the arguments."""
    assert MAX_BUCKETS_PER_ROTATION <= 64, "hash_buckets packs a factor's digit into 6 bits"
    generator = torch.Generator().manual_seed(seed)
    width = sum(f // 2 for f in factors)
    return torch.randn(n_hashes, head_dim, width, generator=generator)


def hash_buckets(x: Tensor, rotations: Tensor, factors: tuple[int, ...]) -> Tensor:
    """Angular LSH buckets of each row of ``x`` (rows, D) for every round: (R, rows) int64.

    ``rotations`` is (R, D, Σ f/2). Per factor f: digit = argmax([xR_f, −xR_f]) in [0, f); the
    digits form the bucket id. Rows are processed in blocks, all rounds at once, so ``x`` is read
    once and the projections stay cache-sized. Projections are float32 whatever the input dtype.
    """
    n_rounds, d, width = rotations.shape
    buckets = torch.zeros(n_rounds, x.shape[0], dtype=torch.long, device=x.device)
    if not factors:
        return buckets
    flat = rotations.to(device=x.device).permute(1, 0, 2).reshape(d, n_rounds * width)
    # argmax([p, −p]) as one integer max: the bits of |p| (monotone in |p|) with the low 6 bits
    # replaced by the candidate's code (column, + f/2 if p < 0). Ties closer than 2⁻¹⁷ relative
    # go to the larger code; the hash stays a deterministic, locality-sensitive function.
    column = torch.cat([torch.arange(f // 2, dtype=torch.int32) for f in factors]).to(x.device)
    half = torch.cat([torch.full((f // 2,), f // 2, dtype=torch.int32) for f in factors]).to(x.device)
    step = max(1, _HASH_BLOCK_ELEMENTS // (n_rounds * width))
    for start in range(0, x.shape[0], step):
        projected = torch.mm(x[start : start + step].float(), flat)  # (blk, R·W)
        bits = projected.view(torch.int32).view(-1, n_rounds, width)
        keyed = (bits & 0x7FFFFFC0) | (column + (half & (bits >> 31)))
        bucket = torch.zeros(keyed.shape[:2], dtype=torch.int32, device=x.device)
        offset = 0
        for f in factors:
            bucket = bucket * f + (keyed[..., offset : offset + f // 2].amax(dim=-1) & 0x3F)
            offset += f // 2
        buckets[:, start : start + step] = bucket.T
    return buckets


@register
class LSHAttention(AttentionMechanism):
    """Reformer's LSH attention: O(N log N) time, O(N) memory, forward and backward."""

    name = "lsh"
    Options = LSHOptions
    # Decoding attends a new query to the cached keys of its own bucket: not a replay of the
    # parallel pass, whose buckets are sorted and chunked over the whole sequence.
    consistent_decoding = False

    def __init__(self, options: LSHOptions | None = None) -> None:
        super().__init__(options)
        self._rotations: dict[tuple[int, tuple[int, ...]], Tensor] = {}

    def rotations(self, head_dim: int, factors: tuple[int, ...]) -> Tensor:
        """The (n_hashes, D, Σ f/2) rotations for this head size and bucket factorisation."""
        key = (head_dim, factors)
        if key not in self._rotations:
            self._rotations[key] = draw_rotations(self.options.seed, self.options.n_hashes, head_dim, factors)
        return self._rotations[key]

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, scale, q_offset) -> Tensor:
        dtype = q.dtype
        same_qk = q is k  # one tensor: hash once, queries and keys share the sort order
        if dtype in (torch.float16, torch.bfloat16):
            q, k, v = q.float(), k.float(), v.float()
        keys = F.normalize(k, dim=-1) if self.options.shared_qk else k
        if q.shape[-2] == k.shape[-2]:
            out = self._sorted_chunks(q, keys, v, same_qk, causal, key_padding_mask, scale, q_offset)
        else:
            out = self._bucket_match(q, keys, v, causal, key_padding_mask, scale, q_offset)
        return out.to(dtype)

    # -- self-attention shape: sort by bucket, attend within chunk windows ----------------------------
    def _sorted_chunks(self, q, k, v, same_qk, causal, key_padding_mask, scale, q_offset) -> Tensor:
        b, h, n, d = q.shape
        dv = v.shape[-1]
        n_rounds = self.options.n_hashes
        factors = plan_buckets(n, self.options.bucket_size, self.options.n_buckets)
        n_buckets = math.prod(factors)
        c = min(self.options.bucket_size, n)
        n_chunks = math.ceil(n / c)
        n_pos = n_chunks * c  # padded length
        pad = n_pos - n
        q_flat = _rows(q, pad)  # (rows, D), rows = B·H·Np
        k_flat = _rows(k, pad)
        v_flat = _rows(v, pad)
        valid = None
        if key_padding_mask is not None or pad:
            real = torch.zeros(b, n_pos, dtype=torch.bool, device=q.device)
            real[:, :n] = True if key_padding_mask is None else key_padding_mask
            valid = real[:, None, :].expand(b, h, n_pos).reshape(-1)  # (rows,)
        lookback = n_chunks > 1
        spec = WindowSpec(
            n_pos=n_pos, scale=scale, causal=causal, q_offset=q_offset, exclude_self=self.options.shared_qk,
            lookback=lookback, self_on_diagonal=same_qk,
        )
        positions = torch.arange(n_pos, device=q.device)
        rotations = self.rotations(d, factors)

        def sort_orders(x_flat: Tensor) -> Tensor:
            """(R, BH, Np) positions sorted by (bucket, position) per round; padding sorts last."""
            bucket = hash_buckets(x_flat.detach(), rotations, factors).view(n_rounds, b * h, n_pos)
            if pad:
                bucket[..., n:] = n_buckets
            return torch.argsort(bucket * n_pos + positions, dim=-1)

        k_orders = sort_orders(k_flat)
        q_orders = k_orders if same_qk else sort_orders(q_flat)
        rows = b * h * n_pos
        # Rounds run in groups (all at once for small inputs, one by one for long ones, which
        # bounds the slot-order output buffer) as extra rows of one kernel call.
        group = max(1, min(n_rounds, _ROUND_GROUP_ELEMENTS // (rows * dv)))
        out = lse = None
        for first in range(0, n_rounds, group):
            g = min(group, n_rounds - first)
            out_r, lse_r = self._rounds(
                q_flat, k_flat, v_flat, q_orders[first : first + g], k_orders[first : first + g], valid, spec, c
            )
            out, lse = _merge_rounds(out, lse, out_r, lse_r)
        return out.view(b, h, n_pos, dv)[:, :, :n]  # type: ignore[union-attr]

    @staticmethod
    def _rounds(q_flat, k_flat, v_flat, q_orders, k_orders, valid, spec: WindowSpec, c: int) -> tuple[Tensor, Tensor]:
        """Outputs (g, rows, Dv) and log-sum-exps (g, rows) of g rounds with sort orders (g, BH, Np)."""
        g, bh, n_pos = q_orders.shape
        n_chunks = n_pos // c
        rows = bh * n_pos
        offset = (torch.arange(bh, device=q_orders.device) * n_pos)[None, :, None]  # (1, BH, 1)
        q_chunks = (q_orders + offset).view(g * bh, n_chunks, c)  # rows of q / k per chunk
        k_chunks = (k_orders + offset).view(g * bh, n_chunks, c)
        lookback = spec.lookback
        # Slot s of a (round, batch, head) sequence holds query chunk s. With look-back the key
        # chunks are listed as [last, 0, 1, ..., nc-1] so that slot s sees key chunks s and s+1,
        # i.e. the previous chunk and its own; one extra slot per sequence and one extra key chunk
        # at the end keep every window a uniform stride (their outputs are never read).
        if lookback:
            q_rows = torch.cat([q_chunks, q_chunks[:, -1:]], dim=1).view(-1, c)
            k_rows = torch.cat([k_chunks[:, -1:], k_chunks], dim=1).view(-1, c)
            k_rows = torch.cat([k_rows, k_rows[-1:]], dim=0)
        else:
            q_rows, k_rows = q_chunks.view(-1, c), k_chunks.view(-1, c)
        out_slots, lse_slots = sorted_window_attention(q_flat, k_flat, v_flat, q_rows, k_rows, valid, spec)
        # Back to the original order: query row i of round r was computed in slot_of_query.
        slot_of_query = torch.arange(g * bh * (n_chunks + lookback) * c, device=q_orders.device)
        slot_of_query = slot_of_query.view(g * bh, n_chunks + lookback, c)[:, :n_chunks].reshape(-1)
        round_offset = (torch.arange(g, device=q_orders.device) * rows)[:, None, None, None]
        inverse = torch.empty_like(slot_of_query)
        inverse[(q_chunks.view(g, bh, n_chunks, c) + round_offset).reshape(-1)] = slot_of_query
        return (
            out_slots.index_select(0, inverse).view(g, rows, -1),
            lse_slots.index_select(0, inverse).view(g, rows),
        )

    # -- different query and key lengths: exact attention within each query's bucket ------------------
    def _bucket_match(self, q, k, v, causal, key_padding_mask, scale, q_offset) -> Tensor:
        b, h, n_q, d = q.shape
        n_k = k.shape[-2]
        factors = plan_buckets(n_k, self.options.bucket_size, self.options.n_buckets)
        rotations = self.rotations(d, factors)
        q_buckets = hash_buckets(q.detach().reshape(-1, d), rotations, factors).view(-1, b, h, n_q)  # (R, B, H, Nq)
        k_buckets = hash_buckets(k.detach().reshape(-1, d), rotations, factors).view(-1, b, h, n_k)
        step = max(1, _MATCH_BLOCK_ELEMENTS // max(1, b * h * n_k))
        outputs = []
        for start in range(0, n_q, step):
            stop = min(n_q, start + step)
            scores = torch.matmul(q[:, :, start:stop], k.transpose(-1, -2)) * scale  # (B, H, blk, Nk)
            allowed = combine_masks(
                stop - start, n_k, causal=causal, key_padding_mask=key_padding_mask,
                q_offset=q_offset + start, device=q.device,
            )
            self_mask = None
            if self.options.shared_qk:
                own = torch.arange(start, stop, device=q.device)[:, None] + q_offset
                self_mask = torch.arange(n_k, device=q.device)[None, :] == own  # (blk, Nk)
            out = lse = None
            for r in range(self.options.n_hashes):
                same = q_buckets[r, :, :, start:stop, None] == k_buckets[r, :, :, None, :]
                allowed_r = same if allowed is None else same & allowed
                s = scores.masked_fill(~allowed_r, MASKED_SCORE)
                if self_mask is not None:
                    s = s.masked_fill(self_mask & allowed_r, SELF_SCORE)
                lse_r = torch.logsumexp(s, dim=-1)  # (B, H, blk)
                empty = ~allowed_r.any(dim=-1)
                probs = torch.exp(s - lse_r[..., None]).masked_fill(empty[..., None], 0.0)
                lse_r = lse_r.masked_fill(empty, EMPTY_LSE)
                out, lse = _merge_rounds(out, lse, torch.matmul(probs, v)[None], lse_r[None])
            outputs.append(out)
        return torch.cat(outputs, dim=2)


def _rows(x: Tensor, pad: int) -> Tensor:
    """(B, H, N, D) -> (B·H·(N + pad), D), zero rows appended per (batch, head); a view if possible."""
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x.reshape(-1, x.shape[-1])


def _merge_rounds(out: Tensor | None, lse: Tensor | None, outs: Tensor, lses: Tensor) -> tuple[Tensor, Tensor]:
    """Fold rounds ``outs`` (g, ..., Dv), ``lses`` (g, ...) into the running softmax ``out, lse``.

    Softmax results over several key sets combine into the softmax over their (multi-)union by
    weighting each with exp(lse_r − logsumexp(lse)).
    """
    if out is None and outs.shape[0] == 1:
        return outs[0], lses[0]
    total = torch.logsumexp(lses if lse is None else torch.cat([lse[None], lses]), dim=0)
    weights = torch.exp(lses - total)[..., None]  # (g, ..., 1)
    if torch.is_grad_enabled() and (outs.requires_grad or (out is not None and out.requires_grad)):
        merged = (outs * weights).sum(dim=0)
        if out is not None:
            merged = merged + out * torch.exp(lse - total)[..., None]
        return merged, total
    # Without autograd, in place: no further full-size temporaries (this bounds peak memory).
    merged = outs[0].mul_(weights[0]) if outs.shape[0] == 1 else outs.mul_(weights).sum(dim=0)
    if out is not None:
        merged.add_(out.mul_(torch.exp(lse - total)[..., None]))
    return merged, total
