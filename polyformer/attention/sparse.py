"""Pattern-based mechanisms: each atom and composite as a named mechanism over one sparse kernel.

Short inputs and decoding steps use dense SDPA with the pattern's boolean mask (faster there);
long self-attention uses the block-sparse kernel, forward and backward, with memory
O(N · keys per query). ``backend`` forces one path: ``"kernel"``, ``"dense"``, or ``"flex"``
(PyTorch's compiled FlexAttention; forward only, no gradients on CPU).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from polyformer.attention.kernels.block_sparse import BlockLayout, block_sparse_attention, build_layout
from polyformer.attention.kernels.key_list import key_list_attention
from polyformer.attention.base import AttentionMechanism
from polyformer.attention.composites import bigbird, longformer
from polyformer.attention.patterns import Band, BlockLocal, Dilated, Global, Pattern, Random
from polyformer.attention.reference import combine_masks
from polyformer.attention.registry import register
from polyformer.errors import ConfigError
from polyformer.options import require

_BACKENDS = ("auto", "kernel", "dense", "flex")


@dataclass
class KernelOptions:
    """Options every pattern-based mechanism shares.

    ``tile_size``: tile size of the sparse kernel (None = the pattern's preferred size).
    ``backend``: "auto" (dense below ``dense_below`` tokens or when decoding, kernel above),
    "kernel", "dense" or "flex".
    """

    tile_size: int | None = None
    backend: str = "auto"
    dense_below: int = 1024

    def __post_init__(self) -> None:
        require(
            self.tile_size is None or (isinstance(self.tile_size, int) and self.tile_size >= 1),
            f"tile_size must be a positive integer or None, got {self.tile_size!r}",
        )
        require(self.backend in _BACKENDS, f"backend must be one of {', '.join(_BACKENDS)}, got {self.backend!r}")
        require(isinstance(self.dense_below, int) and self.dense_below >= 0,
                f"dense_below must be an integer >= 0, got {self.dense_below!r}")


class PatternAttention(AttentionMechanism):
    """Exact softmax attention restricted to a sparse :class:`Pattern`."""

    Options: ClassVar[type] = KernelOptions

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.pattern = self.make_pattern()
        self.consistent_decoding = not self.pattern.length_dependent
        self._layouts: OrderedDict[tuple, BlockLayout] = OrderedDict()

    def make_pattern(self) -> Pattern:
        """The pattern described by this mechanism's options."""
        raise NotImplementedError

    def layout(self, n: int, n_heads: int, causal: bool, device: torch.device) -> BlockLayout:
        """The kernel's tile layout at length ``n`` (cached for the last few lengths)."""
        block = self.options.tile_size or self.pattern.preferred_block()
        key = (n, n_heads, causal, block, str(device))
        if key not in self._layouts:
            self._layouts[key] = build_layout(self.pattern, n, block, n_heads, causal).to(device)
            while len(self._layouts) > 8:
                self._layouts.popitem(last=False)
        self._layouts.move_to_end(key)
        return self._layouts[key]

    def dense_mask(self, n_q: int, n_k: int, n_heads: int, q_offset: int, device: torch.device) -> Tensor:
        """(Hm, Nq, Nk) bool of the pattern for queries at positions ``q_offset …``."""
        n = max(n_k, q_offset + n_q)
        self.pattern.validate(n, n_heads)
        self.pattern.prepare(n, n_heads)
        h = torch.arange(self.pattern.heads(n_heads), device=device)[:, None, None]
        q = torch.arange(q_offset, q_offset + n_q, device=device)[None, :, None]
        k = torch.arange(n_k, device=device)[None, None, :]
        return self.pattern.mask(h, q, k, n)

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, scale, q_offset) -> Tensor:
        b, h, n_q, _ = q.shape
        n_k = k.shape[-2]
        backend = self.options.backend
        self_attention = n_q == n_k and q_offset == 0
        if backend == "auto":
            backend = "kernel" if self_attention and n_k > self.options.dense_below else "dense"
        if backend == "kernel":
            if self_attention and (keys := self.pattern.key_lists(n_k, h)) is not None:
                keys = keys.to(q.device)
                return key_list_attention(q, k, v, keys, scale=scale, causal=causal,
                                          key_padding_mask=key_padding_mask)
            if not self_attention:
                raise ConfigError(
                    f"attention {self.name!r}: the sparse kernel computes self-attention (queries and keys "
                    f"of one length, q_offset 0); got {n_q} queries, {n_k} keys, q_offset {q_offset}. "
                    "Use backend='auto' or 'dense' for cross-attention and decoding"
                )
            layout = self.layout(n_k, h, causal, q.device)
            return block_sparse_attention(q, k, v, layout, scale=scale, key_padding_mask=key_padding_mask)
        if backend == "flex":
            from polyformer.attention.kernels.flex import flex_pattern_attention

            return flex_pattern_attention(self.pattern, q, k, v, causal=causal,
                                          key_padding_mask=key_padding_mask, scale=scale)
        allowed = self.dense_mask(n_q, n_k, h, q_offset, q.device)
        mask = combine_masks(n_q, n_k, allowed=allowed, causal=causal, key_padding_mask=key_padding_mask,
                             q_offset=q_offset, device=q.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return out.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)


# ------------------------------------------------------------------------------------------------
# Registered mechanisms: one small options dataclass each
# ------------------------------------------------------------------------------------------------


@dataclass
class SparseOptions(KernelOptions):
    """``pattern``: any :class:`Pattern` (atoms combined with | and &, or ``from_mask_mod``)."""

    pattern: Pattern | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.pattern, Pattern),
                "attention 'sparse' needs pattern=<a Pattern>, e.g. patterns.Band(64, 0) | patterns.Global([0])")


@register
class SparseAttention(PatternAttention):
    """Any user-defined pattern."""

    name = "sparse"
    Options = SparseOptions

    def make_pattern(self):
        return self.options.pattern


@dataclass
class SlidingWindowOptions(KernelOptions):
    """``window``: keys within ``window - 1`` positions of the query (``window`` keys when causal)."""

    window: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.window, int) and self.window >= 1,
                f"window must be a positive integer (keys per query), got {self.window!r}")


@register
class SlidingWindowAttention(PatternAttention):
    """Band / sliding window: ``|q - k| < window`` (with ``causal``: the last ``window`` keys)."""

    name = "sliding_window"
    Options = SlidingWindowOptions

    def make_pattern(self):
        return Band(self.options.window - 1, self.options.window - 1)


@dataclass
class DilatedOptions(KernelOptions):
    """``window`` keys on each side, ``dilation`` positions apart (one value or one per head)."""

    window: int = 64
    dilation: int | tuple[int, ...] = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.window, int) and self.window >= 1,
                f"window must be a positive integer, got {self.window!r}")
        if isinstance(self.dilation, list):
            self.dilation = tuple(self.dilation)


@register
class DilatedAttention(PatternAttention):
    """Dilated sliding window: keys ``q ± j·dilation`` for ``j < window``."""

    name = "dilated"
    Options = DilatedOptions

    def make_pattern(self):
        return Dilated(self.options.window - 1, self.options.window - 1, self.options.dilation)


@dataclass
class RandomOptions(KernelOptions):
    """``count`` random keys (or key blocks of ``unit`` positions) per query, seeded."""

    count: int = 8
    unit: int = 1
    seed: int = 0
    per_head: bool = False


@register
class RandomAttention(PatternAttention):
    """Random attention: ``count`` keys per query drawn without replacement."""

    name = "random"
    Options = RandomOptions

    def make_pattern(self):
        o = self.options
        return Random(o.count, unit=o.unit, seed=o.seed, per_head=o.per_head)


@dataclass
class BlockLocalOptions(KernelOptions):
    """``size``: length of the local blocks."""

    size: int = 128


@register
class BlockLocalAttention(PatternAttention):
    """Block-local attention: queries see only the keys of their own block."""

    name = "block_local"
    Options = BlockLocalOptions

    def make_pattern(self):
        return BlockLocal(self.options.size)


@dataclass
class GlobalOptions(KernelOptions):
    """``tokens``: global positions (negative = from the end)."""

    tokens: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tokens = tuple(self.tokens)


@register
class GlobalAttention(PatternAttention):
    """Global tokens only: they attend everything and everything attends them."""

    name = "global"
    Options = GlobalOptions

    def make_pattern(self):
        return Global(self.options.tokens)


@dataclass
class LongformerOptions(KernelOptions):
    """``window`` keys per query (half on each side), ``global_tokens``, per-head ``dilation``."""

    window: int = 512
    global_tokens: tuple[int, ...] = ()
    dilation: int | tuple[int, ...] = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        self.global_tokens = tuple(self.global_tokens)
        if isinstance(self.dilation, list):
            self.dilation = tuple(self.dilation)


@register
class LongformerAttention(PatternAttention):
    """Longformer: sliding window (optionally dilated per head) plus global tokens."""

    name = "longformer"
    Options = LongformerOptions

    def make_pattern(self):
        o = self.options
        return longformer(o.window, o.global_tokens, o.dilation)


@dataclass
class BigBirdOptions(KernelOptions):
    """BigBird ITC on blocks: window, global and random blocks (seeded, per head)."""

    block_size: int = 64
    window_blocks: int = 3
    global_blocks: int = 2
    random_blocks: int = 3
    seed: int = 0
    per_head: bool = True


@register
class BigBirdAttention(PatternAttention):
    """BigBird ITC: block window + global blocks + random blocks."""

    name = "bigbird"
    Options = BigBirdOptions

    def make_pattern(self):
        o = self.options
        return bigbird(o.block_size, o.window_blocks, o.global_blocks, o.random_blocks, o.seed, o.per_head)
