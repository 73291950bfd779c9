"""Sparse attention patterns: which keys each query may attend to.

A pattern answers two questions:

* ``mask(h, q, k, n)`` — elementwise: may query position ``q`` attend to key position ``k`` in head
  ``h`` of a length-``n`` sequence? (index tensors broadcast against each other; True = attend)
* ``block_mask(n, block, n_heads)`` — per tile of ``block × block`` positions: is the tile EMPTY,
  PARTIAL or FULL? Atoms answer this in O((n / block)²) without touching single positions, which
  is what lets the sparse kernel skip work at 64K tokens. PARTIAL is always a safe answer; FULL
  must be exact.

The five atoms of the chapter's figure are :class:`Global`, :class:`Band` (sliding window),
:class:`Dilated`, :class:`Random` and :class:`BlockLocal`; :class:`Causal` is the sixth building
block. Patterns combine with ``|`` (union) and ``&`` (intersection), or ``or_masks`` / ``and_masks``.
User-defined patterns come from a FlexAttention-style ``mask_mod(b, h, q_idx, kv_idx)`` via
:func:`from_mask_mod`.
"""

from __future__ import annotations

import hashlib
import math
from functools import reduce
from typing import Callable, Sequence

import torch
from torch import Tensor

from polyformer.errors import ConfigError

EMPTY, PARTIAL, FULL = 0, 1, 2

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


class Pattern:
    """Base class of every pattern. Subclasses implement :meth:`mask` and usually :meth:`block_mask`."""

    #: a short human-readable description, shown in pictures and reprs
    label: str = "pattern"
    #: whether a query's keys depend on the sequence length (random draws over the whole sequence,
    #: global tokens counted from the end); decoding with a cache then sees the current length's
    #: pattern, which differs from a full pass over the final length
    length_dependent: bool = False

    # -- what subclasses implement ---------------------------------------------------------------
    def mask(self, h: Tensor, q: Tensor, k: Tensor, n: int) -> Tensor:
        """Elementwise permission (bool) for broadcastable head / query / key index tensors."""
        raise NotImplementedError

    def block_mask(self, n: int, block: int, n_heads: int) -> Tensor:
        """(1 or n_heads, nb, nb) int8 of EMPTY / PARTIAL / FULL per tile, nb = ceil(n / block).

        The default evaluates :meth:`mask` on every position (exact but O(n²) time, in row chunks).
        """
        return _classify_by_evaluation(self, n, block, n_heads)

    def heads(self, n_heads: int) -> int:
        """How many distinct per-head patterns there are: 1 (shared) or ``n_heads``."""
        return 1

    def validate(self, n: int, n_heads: int) -> None:
        """Raise a ConfigError if the pattern cannot be used at length ``n`` with ``n_heads`` heads."""

    def preferred_block(self) -> int:
        """The tile size the sparse kernel should use for this pattern by default."""
        return 128

    def key_lists(self, n: int, n_heads: int) -> Tensor | None:
        """(1 or n_heads, n, r) explicit keys per query (-1 = none) for patterns better served by
        gathering keys than by tiles (scattered single keys); None for tile-friendly patterns."""
        return None

    # -- derived ---------------------------------------------------------------------------------
    def dense(self, n: int, n_heads: int | None = None) -> Tensor:
        """The (n, n) bool mask, True = attend; ``(n_heads, n, n)`` when ``n_heads`` is given."""
        self.validate(n, n_heads or 1)
        self.prepare(n, n_heads or 1)
        idx = torch.arange(n)
        if n_heads is None:
            return self.mask(torch.zeros((), dtype=torch.long), idx[:, None], idx[None, :], n).expand(n, n)
        h = torch.arange(n_heads)[:, None, None]
        return self.mask(h, idx[None, :, None], idx[None, None, :], n).expand(n_heads, n, n)

    def prepare(self, n: int, n_heads: int) -> None:
        """Precompute whatever :meth:`mask` needs at length ``n`` (e.g. random tables), so that the
        mask can then be traced or vmapped (FlexAttention) without data-dependent Python."""

    def as_mask_mod(self, n: int, n_heads: int = 1) -> MaskMod:
        """A FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` for sequences of length ``n``."""
        self.prepare(n, n_heads)

        def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return self.mask(h, q_idx, kv_idx, n)

        return mask_mod

    def __or__(self, other: "Pattern") -> "Pattern":
        return or_masks(self, other)

    def __and__(self, other: "Pattern") -> "Pattern":
        return and_masks(self, other)

    def __repr__(self) -> str:
        return self.label


# ------------------------------------------------------------------------------------------------
# Atoms
# ------------------------------------------------------------------------------------------------


def _check_int(value: int, name: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _offsets(n: int, block: int) -> tuple[Tensor, Tensor]:
    """Block-pair offsets (j - i) * block as an (nb, nb) tensor, and nb."""
    nb = math.ceil(n / block)
    blocks = torch.arange(nb)
    return (blocks[None, :] - blocks[:, None]) * block, nb


def _band_classes(n: int, block: int, before: float, after: float) -> Tensor:
    """Tile classes of ``-before <= k - q <= after`` (computed on whole tiles: exact for FULL)."""
    offset, _ = _offsets(n, block)
    lo, hi = offset - (block - 1), offset + (block - 1)  # extreme k - q inside a tile
    full = (lo >= -before) & (hi <= after)
    empty = (hi < -before) | (lo > after)
    classes = torch.full(offset.shape, PARTIAL, dtype=torch.int8)
    classes[full] = FULL
    classes[empty] = EMPTY
    return classes[None]


class Band(Pattern):
    """Sliding window: query ``q`` attends keys ``k`` with ``q - before <= k <= q + after``."""

    def __init__(self, before: int, after: int) -> None:
        _check_int(before, "band: before", 0)
        _check_int(after, "band: after", 0)
        self.before, self.after = before, after
        self.label = f"band(before={before}, after={after})"

    def mask(self, h, q, k, n):
        diff = k - q
        return (diff >= -self.before) & (diff <= self.after)

    def block_mask(self, n, block, n_heads):
        return _band_classes(n, block, self.before, self.after)


class Causal(Pattern):
    """Keys at or before the query: ``k <= q``."""

    label = "causal"

    def mask(self, h, q, k, n):
        return k <= q

    def block_mask(self, n, block, n_heads):
        return _band_classes(n, block, math.inf, 0)


class Dilated(Pattern):
    """Dilated sliding window: keys ``q + j·dilation`` for ``-before <= j <= after``.

    ``dilation`` may be one integer or one per head (Longformer's per-head dilation).
    """

    def __init__(self, before: int, after: int, dilation: int | Sequence[int]) -> None:
        _check_int(before, "dilated: before", 0)
        _check_int(after, "dilated: after", 0)
        dilations = (dilation,) if isinstance(dilation, int) else tuple(dilation)
        if not dilations:
            raise ConfigError("dilated: dilation must be an integer >= 1 or a non-empty list of them")
        for d in dilations:
            _check_int(d, "dilated: dilation", 1)
        self.before, self.after, self.dilations = before, after, dilations
        self.label = f"dilated(before={before}, after={after}, dilation={dilation})"

    def heads(self, n_heads):
        return 1 if len(self.dilations) == 1 else n_heads

    def validate(self, n, n_heads):
        if len(self.dilations) > 1 and len(self.dilations) != n_heads:
            raise ConfigError(
                f"dilated: {len(self.dilations)} per-head dilations given but the input has "
                f"{n_heads} heads; give one dilation per head or a single integer"
            )

    def _dilation(self, h: Tensor) -> Tensor:
        table = torch.tensor(self.dilations, device=h.device)
        return table[0] if len(self.dilations) == 1 else table[h]

    def mask(self, h, q, k, n):
        d = self._dilation(h)
        diff = k - q
        return (diff % d == 0) & (diff >= -self.before * d) & (diff <= self.after * d)

    def block_mask(self, n, block, n_heads):
        self.validate(n, n_heads)
        per_head = [
            _band_classes(n, block, self.before * d, self.after * d).clamp(max=PARTIAL if d > 1 else FULL)
            for d in (self.dilations if len(self.dilations) > 1 else self.dilations[:1])
        ]
        return torch.cat(per_head)


class BlockLocal(Pattern):
    """Block-local: queries attend keys in the same block of ``size`` consecutive positions."""

    def __init__(self, size: int) -> None:
        _check_int(size, "block_local: size", 1)
        self.size = size
        self.label = f"block_local(size={size})"

    def preferred_block(self):
        return self.size if self.size <= 256 else 128

    def mask(self, h, q, k, n):
        return torch.div(q, self.size, rounding_mode="floor") == torch.div(k, self.size, rounding_mode="floor")

    def block_mask(self, n, block, n_heads):
        nb = math.ceil(n / block)
        first = torch.arange(nb) * block // self.size  # local block of a tile's first position
        last = (torch.arange(nb) * block + block - 1) // self.size
        overlap = (first[:, None] <= last[None, :]) & (first[None, :] <= last[:, None])
        full = (first == last)[:, None] & (first == last)[None, :] & (first[:, None] == first[None, :])
        classes = torch.where(overlap, PARTIAL, EMPTY).to(torch.int8)
        classes[full] = FULL
        return classes[None]


class Global(Pattern):
    """Global tokens: the given positions attend to everything and are attended to by everything.

    Negative indices count from the end (``-1`` is the last token), resolved at each length.
    """

    def __init__(self, indices: Sequence[int]) -> None:
        indices = tuple(sorted(set(int(i) for i in indices)))
        self.indices = indices
        self.length_dependent = any(i < 0 for i in indices)
        shown = list(indices) if len(indices) <= 6 else f"{len(indices)} tokens"
        self.label = f"global({shown})"

    def resolve(self, n: int) -> Tensor:
        """The global positions at length ``n`` (sorted, unique)."""
        self.validate(n, 1)
        idx = torch.tensor(self.indices, dtype=torch.long)
        return torch.unique(torch.where(idx < 0, idx + n, idx))

    def validate(self, n, n_heads):
        bad = [i for i in self.indices if not -n <= i < n]
        if bad:
            raise ConfigError(
                f"global: index {bad[0]} is out of range for a sequence of length {n}; "
                f"global indices must lie in [-{n}, {n})"
            )

    def mask(self, h, q, k, n):
        is_global = torch.zeros(n, dtype=torch.bool, device=q.device)
        is_global[self.resolve(n).to(q.device)] = True
        return is_global[q] | is_global[k]

    def block_mask(self, n, block, n_heads):
        idx = self.resolve(n)
        nb = math.ceil(n / block)
        per_block = torch.zeros(nb, dtype=torch.long)
        per_block.index_add_(0, idx // block, torch.ones_like(idx))
        sizes = torch.full((nb,), block)
        sizes[-1] = n - (nb - 1) * block
        any_global = per_block > 0
        all_global = per_block == sizes
        classes = torch.where(any_global[:, None] | any_global[None, :], PARTIAL, EMPTY).to(torch.int8)
        classes[all_global[:, None] | all_global[None, :]] = FULL
        return classes[None]


def _stable_seed(*parts: object) -> int:
    """A seed derived from ``parts`` that is the same in every process (unlike ``hash``)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def draw_without_replacement(
    allowed: Tensor, count: int, generator: torch.Generator
) -> Tensor:
    """Per row of the bool matrix ``allowed`` (rows, units), ``count`` distinct allowed units.

    Rows with fewer allowed units than ``count`` get all of them; missing picks are -1.
    """
    scores = torch.rand(allowed.shape, generator=generator)
    scores = scores.masked_fill(~allowed, -1.0)
    top = scores.topk(min(count, allowed.shape[-1]), dim=-1)
    return torch.where(top.values >= 0, top.indices, -1)


class Random(Pattern):
    """Random attention: each query (or query unit of ``unit`` positions) attends ``count`` random
    key units, drawn without replacement, seeded and reproducible.

    ``unit=1`` draws single keys; ``unit=64`` draws whole 64-token blocks (BigBird's random
    blocks). ``per_head`` draws independently for each head. ``avoid`` is a pattern whose keys are
    not drawn again (BigBird draws its random blocks outside the window and global blocks).
    Draws cover the whole sequence, so they depend on its length (``length_dependent``).
    """

    length_dependent = True

    def __init__(
        self,
        count: int,
        *,
        unit: int = 1,
        seed: int = 0,
        per_head: bool = False,
        avoid: Pattern | None = None,
    ) -> None:
        _check_int(count, "random: count", 0)
        _check_int(unit, "random: unit", 1)
        self.count, self.unit, self.seed, self.per_head, self.avoid = count, unit, seed, per_head, avoid
        self._tables: dict[tuple[int, int], Tensor] = {}
        self._stacks: dict[int, Tensor] = {}
        self.label = f"random(count={count}, unit={unit}, seed={seed}{', per_head' if per_head else ''})"

    def heads(self, n_heads):
        return n_heads if self.per_head else 1

    def preferred_block(self):
        return self.unit if 16 <= self.unit <= 256 else 128

    def table(self, n: int, head: int) -> Tensor:
        """(query units, count) key units drawn for ``head`` at length ``n`` (-1 = none left)."""
        key = (n, head if self.per_head else 0)
        if key not in self._tables:
            units = math.ceil(n / self.unit)
            generator = torch.Generator().manual_seed(_stable_seed(self.seed, key, self.count, self.unit))
            head_index = torch.tensor(key[1])

            def avoided(rows: Tensor, drawn: Tensor) -> Tensor:
                # Units are compared by their first positions: exact for unit-aligned avoid patterns
                # such as BigBird's window and global blocks.
                if self.avoid is None:
                    return torch.zeros(drawn.shape, dtype=torch.bool)
                return self.avoid.mask(head_index, rows[:, None] * self.unit, drawn * self.unit, n)

            if units * units <= 1 << 24:  # small: exact sampling over an explicit candidate matrix
                every = torch.arange(units)
                allowed = ~avoided(every, every[None, :].expand(units, units))
                self._tables[key] = draw_without_replacement(allowed, self.count, generator)
            else:
                self._tables[key] = _draw_distinct(units, units, self.count, generator, avoided)
        return self._tables[key]

    def prepare(self, n, n_heads):
        heads = n_heads if self.per_head else 1
        known = self._stacks.get(n)
        if known is None or known.shape[0] < heads:
            self._stacks[n] = torch.stack([self.table(n, i) for i in range(heads)])  # (Hr, units, count)

    def key_lists(self, n, n_heads):
        if self.unit != 1:
            return None  # block draws are tile-friendly
        self.prepare(n, n_heads)
        return self._stacks[n]

    def _tables_for(self, h: Tensor, n: int) -> Tensor:
        # No data-dependent Python here (FlexAttention vmaps this): callers prepare() first.
        if n not in self._stacks:
            self.prepare(n, 1)
        return self._stacks[n].to(h.device)

    def mask(self, h, q, k, n):
        tables = self._tables_for(h, n)
        head = h if self.per_head else torch.zeros_like(h)
        drawn = tables[head, torch.div(q, self.unit, rounding_mode="floor")]  # (..., count)
        return (drawn == torch.div(k, self.unit, rounding_mode="floor")[..., None]).any(-1)

    def block_mask(self, n, block, n_heads):
        self.prepare(n, n_heads)
        nb = math.ceil(n / block)
        heads = self.heads(n_heads)
        classes = torch.zeros(heads, nb, nb, dtype=torch.int8)
        # A drawn unit covers whole tiles, and a tile's queries share their draws, iff unit % block == 0.
        mark = FULL if self.unit % block == 0 else PARTIAL
        for head in range(heads):
            table = self.table(n, head)  # (query units, count)
            u = torch.arange(table.shape[0])
            q_first, q_last = u * self.unit // block, ((u + 1) * self.unit - 1).clamp(max=n - 1) // block
            k_first = table.clamp(min=0) * self.unit // block
            k_last = ((table.clamp(min=0) + 1) * self.unit - 1).clamp(max=n - 1) // block
            span_q = int((q_last - q_first).max()) + 1
            span_k = int((k_last - k_first).max()) + 1 if table.numel() else 1
            rows = q_first[:, None] + torch.arange(span_q)  # (units, span_q)
            cols = k_first[..., None] + torch.arange(span_k)  # (units, count, span_k)
            ok = (rows <= q_last[:, None])[:, :, None, None] & (
                (cols <= k_last[..., None]) & (table >= 0)[..., None]
            )[:, None]
            r = rows[:, :, None, None].expand(ok.shape)[ok]
            c = cols[:, None].expand(ok.shape)[ok]
            classes[head, r, c] = mark
        return classes


def _draw_distinct(
    rows: int,
    units: int,
    count: int,
    generator: torch.Generator,
    rejected: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """``count`` distinct random units in [0, units) per row that ``rejected`` does not refuse.

    Duplicates and refused draws are drawn again; meant for ``count`` much smaller than ``units``.
    """
    count = min(count, units)
    table = torch.randint(units, (rows, count), generator=generator)
    row_index = torch.arange(rows)
    for _ in range(10_000):
        table, _ = table.sort(dim=1)
        bad = rejected(row_index, table)
        bad[:, 1:] |= table[:, 1:] == table[:, :-1]
        if not bad.any():
            return table
        table[bad] = torch.randint(units, (int(bad.sum()),), generator=generator)
    raise ConfigError(f"random: could not draw {count} distinct allowed keys per query; lower count")


# ------------------------------------------------------------------------------------------------
# Combinations and user-defined patterns
# ------------------------------------------------------------------------------------------------


class _Combined(Pattern):
    def __init__(self, parts: Sequence[Pattern], union: bool, label: str | None = None) -> None:
        if not parts:
            raise ConfigError("combine at least one pattern")
        for p in parts:
            if not isinstance(p, Pattern):
                raise ConfigError(f"expected a Pattern, got {type(p).__name__}: {p!r}")
        self.parts, self.union = tuple(parts), union
        self.length_dependent = any(p.length_dependent for p in parts)
        joiner = " | " if union else " & "
        self.label = label or "(" + joiner.join(p.label for p in parts) + ")"

    def heads(self, n_heads):
        return max(p.heads(n_heads) for p in self.parts)

    def validate(self, n, n_heads):
        for p in self.parts:
            p.validate(n, n_heads)

    def prepare(self, n, n_heads):
        for p in self.parts:
            p.prepare(n, n_heads)

    def preferred_block(self):
        return min(p.preferred_block() for p in self.parts)

    def mask(self, h, q, k, n):
        masks = (p.mask(h, q, k, n) for p in self.parts)
        return reduce(torch.logical_or if self.union else torch.logical_and, masks)

    def block_mask(self, n, block, n_heads):
        classes = [p.block_mask(n, block, n_heads) for p in self.parts]
        # union: FULL if any part is FULL, EMPTY only if all are; intersection: the reverse.
        return reduce(torch.maximum if self.union else torch.minimum, classes)


def or_masks(*patterns: Pattern, label: str | None = None) -> Pattern:
    """Union: a key is allowed if any pattern allows it."""
    return patterns[0] if len(patterns) == 1 and label is None else _Combined(patterns, True, label)


def and_masks(*patterns: Pattern, label: str | None = None) -> Pattern:
    """Intersection: a key is allowed only if every pattern allows it."""
    return patterns[0] if len(patterns) == 1 and label is None else _Combined(patterns, False, label)


class _FromMaskMod(Pattern):
    def __init__(self, mask_mod: MaskMod, label: str, block_mask_fn=None) -> None:
        self.mask_mod, self.label, self._block_mask_fn = mask_mod, label, block_mask_fn

    def mask(self, h, q, k, n):
        b = torch.zeros((), dtype=torch.long, device=q.device)
        return torch.as_tensor(self.mask_mod(b, h, q, k), dtype=torch.bool)

    def block_mask(self, n, block, n_heads):
        if self._block_mask_fn is not None:
            return self._block_mask_fn(n, block, n_heads)
        return super().block_mask(n, block, n_heads)


def from_mask_mod(
    mask_mod: MaskMod,
    label: str = "custom",
    block_mask_fn: Callable[[int, int, int], Tensor] | None = None,
) -> Pattern:
    """A pattern from a FlexAttention-style ``mask_mod(b, h, q_idx, kv_idx) -> bool``.

    Without ``block_mask_fn`` the tile classes are found by evaluating the mask everywhere
    (O(n²) time once per length, then cached by the mechanism); pass one for very long inputs.
    """
    if not callable(mask_mod):
        raise ConfigError(f"from_mask_mod needs a callable mask_mod(b, h, q_idx, kv_idx), got {mask_mod!r}")
    return _FromMaskMod(mask_mod, label, block_mask_fn)


def _classify_by_evaluation(pattern: Pattern, n: int, block: int, n_heads: int) -> Tensor:
    """Exact tile classes by evaluating the mask on every position, a band of query tiles at a time."""
    pattern.prepare(n, n_heads)
    nb = math.ceil(n / block)
    heads = pattern.heads(n_heads)
    padded = nb * block
    classes = torch.empty(heads, nb, nb, dtype=torch.int8)
    k = torch.arange(padded)
    rows_per_step = max(1, (1 << 24) // max(1, padded * block * heads))
    for start in range(0, nb, rows_per_step):
        stop = min(nb, start + rows_per_step)
        q = torch.arange(start * block, stop * block)
        h = torch.arange(heads)[:, None, None]
        allowed = pattern.mask(h, q[None, :, None], k[None, None, :], n).expand(heads, len(q), padded)
        valid = (q[:, None] < n) & (k[None, :] < n)
        tiles = allowed.reshape(heads, stop - start, block, nb, block)
        valid = valid.reshape(1, stop - start, block, nb, block)
        any_ = (tiles & valid).any(dim=(2, 4))
        all_ = (tiles | ~valid).all(dim=(2, 4))
        classes[:, start:stop] = torch.where(all_, FULL, torch.where(any_, PARTIAL, EMPTY)).to(torch.int8)
    return classes
