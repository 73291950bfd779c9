"""Named composites of the atomic patterns: Longformer and BigBird (ITC)."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from polyformer.attention.patterns import (
    EMPTY,
    FULL,
    PARTIAL,
    Band,
    Dilated,
    Global,
    Pattern,
    Random,
    or_masks,
)
from polyformer.errors import ConfigError


def longformer(window: int, global_tokens: Sequence[int] = (), dilation: int | Sequence[int] = 1) -> Pattern:
    """Longformer (Beltagy et al. 2020): a sliding window of ``window`` keys (``window // 2`` on each
    side, Hugging Face's ``attention_window``), optionally dilated per head, plus global tokens."""
    if not isinstance(window, int) or window < 2 or window % 2:
        raise ConfigError(f"longformer: window must be a positive even integer (keys per query), got {window!r}")
    side = window // 2
    dilations = (dilation,) if isinstance(dilation, int) else tuple(dilation)
    local: Pattern = Band(side, side) if set(dilations) == {1} else Dilated(side, side, dilation)
    parts = [local] + ([Global(global_tokens)] if global_tokens else [])
    label = f"longformer(window={window}, global={len(tuple(global_tokens))}, dilation={dilation})"
    return or_masks(*parts, label=label)


class BlockWindow(Pattern):
    """Block sliding window: query block ``i`` attends key blocks ``i - radius … i + radius``."""

    def __init__(self, block: int, radius: int) -> None:
        self.block, self.radius = block, radius
        self.label = f"block_window(block={block}, radius={radius})"

    def preferred_block(self):
        return self.block

    def mask(self, h, q, k, n):
        distance = torch.div(q, self.block, rounding_mode="floor") - torch.div(k, self.block, rounding_mode="floor")
        return distance.abs() <= self.radius

    def block_mask(self, n, block, n_heads):
        if self.block % block:
            return super().block_mask(n, block, n_heads)
        nb = math.ceil(n / block)
        own = torch.arange(nb) * block // self.block  # pattern block of each tile
        near = (own[:, None] - own[None, :]).abs() <= self.radius
        return torch.where(near, FULL, EMPTY).to(torch.int8)[None]


def bigbird(
    block_size: int = 64,
    window_blocks: int = 3,
    global_blocks: int = 2,
    random_blocks: int = 3,
    seed: int = 0,
    per_head: bool = True,
) -> Pattern:
    """BigBird ITC (Zaheer et al. 2020) on blocks of ``block_size`` tokens.

    Each query block attends ``window_blocks`` neighbouring blocks (odd, centred), the global
    blocks (the first ``ceil(g/2)`` and last ``floor(g/2)`` blocks, so the default 2 means first and
    last, as in Hugging Face), and ``random_blocks`` blocks drawn outside those, per head when
    ``per_head``, seeded and reproducible. Global blocks attend everything.
    """
    for name, value, minimum in (
        ("block_size", block_size, 1), ("window_blocks", window_blocks, 1),
        ("global_blocks", global_blocks, 0), ("random_blocks", random_blocks, 0),
    ):
        if not isinstance(value, int) or value < minimum:
            raise ConfigError(f"bigbird: {name} must be an integer >= {minimum}, got {value!r}")
    if window_blocks % 2 == 0:
        raise ConfigError(f"bigbird: window_blocks must be odd (a centred window), got {window_blocks}")
    window = BlockWindow(block_size, window_blocks // 2)
    first, last = math.ceil(global_blocks / 2), global_blocks // 2
    global_idx = list(range(first * block_size)) + list(range(-last * block_size, 0))
    parts: list[Pattern] = [window]
    if global_idx:
        parts.append(_GlobalBlocks(global_idx, block_size))
    if random_blocks:
        avoid = or_masks(*parts)
        parts.append(Random(random_blocks, unit=block_size, seed=seed, per_head=per_head, avoid=avoid))
    label = (
        f"bigbird(block={block_size}, window={window_blocks}, global={global_blocks}, "
        f"random={random_blocks}, seed={seed})"
    )
    return or_masks(*parts, label=label)


class _GlobalBlocks(Global):
    """Global tokens that form whole blocks; validated against the length so that short inputs whose
    first and last global blocks overlap still work."""

    def __init__(self, indices: Sequence[int], block: int) -> None:
        super().__init__(indices)
        self.block = block

    def preferred_block(self):
        return self.block

    def validate(self, n, n_heads):
        pass  # out-of-range block positions of very short inputs are dropped by resolve()

    def resolve(self, n):
        idx = torch.tensor(self.indices, dtype=torch.long)
        idx = torch.where(idx < 0, idx + n, idx)
        return torch.unique(idx[(idx >= 0) & (idx < n)])


__all__ = ["BlockWindow", "PARTIAL", "bigbird", "longformer"]
