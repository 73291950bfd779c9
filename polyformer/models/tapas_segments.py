"""Segmented tensors for TAPAS: tokens grouped into table cells, rows and columns.

A table flattened into a token sequence is addressed through *index maps*: each token carries the
id of the segment (row, column, or cell) it belongs to. The losses and the column head need three
things from such a map: reduce the tokens of each segment to one value (:func:`reduce_sum`,
:func:`reduce_mean`, :func:`reduce_max`, :func:`reduce_min`), send a per-segment value back to
every token of the segment (:func:`gather`), and combine two maps into their product (rows x columns
= cells, :class:`ProductIndexMap`). Every reduction is one ``scatter_reduce`` over a flattened batch
(:func:`flatten` gives each example its own range of segment ids), so there are no Python loops.

:class:`TableIndex` builds the maps a question-answering head needs from the (B, L, 7)
``token_type_ids`` that TAPAS' tokenizer produces, together with the masks derived from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from polyformer.errors import ShapeError

__all__ = [
    "COLUMN_TYPE",
    "ROW_TYPE",
    "IndexMap",
    "ProductIndexMap",
    "TableIndex",
    "flatten",
    "gather",
    "range_index_map",
    "reduce_max",
    "reduce_mean",
    "reduce_min",
    "reduce_sum",
]

#: positions of the column and row ids among the seven token types
#: (segment, column, row, previous answer, column rank, inverse column rank, numeric relation)
COLUMN_TYPE = 1
ROW_TYPE = 2


class IndexMap:
    """Segment ids ``indices`` in ``[0, num_segments)``; the first ``batch_dims`` dimensions are a batch.

    Segments of different batch elements are distinct even when they share an id, so each example
    of a batch can have its own table.
    """

    def __init__(self, indices: Tensor, num_segments: int, batch_dims: int = 0) -> None:
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise ShapeError(f"index map indices must be an integer tensor, got {indices.dtype}; "
                             "pass segment ids as torch.long")
        if not 0 <= batch_dims <= indices.dim():
            raise ShapeError(f"batch_dims ({batch_dims}) must lie in [0, {indices.dim()}] for indices of "
                             f"shape {tuple(indices.shape)}")
        if int(num_segments) < 1:
            raise ShapeError(f"num_segments must be at least 1, got {num_segments}")
        self.indices = indices.long()
        self.num_segments = int(num_segments)
        self.batch_dims = batch_dims

    @property
    def batch_shape(self) -> torch.Size:
        """The leading batch dimensions of :attr:`indices`."""
        return self.indices.shape[: self.batch_dims]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(shape={tuple(self.indices.shape)}, num_segments={self.num_segments}, "
                f"batch_dims={self.batch_dims})")


class ProductIndexMap(IndexMap):
    """Pairs ``(outer, inner)`` as one index ``outer * inner.num_segments + inner``.

    With rows as the outer map and columns as the inner one, the segments are the table's cells.
    """

    def __init__(self, outer_index: IndexMap, inner_index: IndexMap) -> None:
        if outer_index.batch_dims != inner_index.batch_dims:
            raise ShapeError(f"the two index maps of a product need the same batch_dims, got "
                             f"{outer_index.batch_dims} and {inner_index.batch_dims}")
        if outer_index.indices.shape != inner_index.indices.shape:
            raise ShapeError(f"the two index maps of a product need the same shape, got "
                             f"{tuple(outer_index.indices.shape)} and {tuple(inner_index.indices.shape)}")
        super().__init__(outer_index.indices * inner_index.num_segments + inner_index.indices,
                         outer_index.num_segments * inner_index.num_segments, outer_index.batch_dims)
        self.outer_index = outer_index
        self.inner_index = inner_index

    def project_outer(self, index: IndexMap) -> IndexMap:
        """The outer component (e.g. the row) of each product id in ``index``."""
        return IndexMap(torch.div(index.indices, self.inner_index.num_segments, rounding_mode="floor"),
                        self.outer_index.num_segments, index.batch_dims)

    def project_inner(self, index: IndexMap) -> IndexMap:
        """The inner component (e.g. the column) of each product id in ``index``."""
        return IndexMap(torch.remainder(index.indices, self.inner_index.num_segments),
                        self.inner_index.num_segments, index.batch_dims)


def flatten(index: IndexMap) -> IndexMap:
    """One 1-D map over the whole batch: example ``k`` gets ids shifted by ``k * num_segments``."""
    batch_size = math.prod(index.batch_shape)
    offsets = torch.arange(batch_size, device=index.indices.device) * index.num_segments
    offsets = offsets.view(*index.batch_shape, *([1] * (index.indices.dim() - index.batch_dims)))
    return IndexMap((index.indices + offsets).reshape(-1), index.num_segments * batch_size, 0)


def range_index_map(batch_shape: torch.Size | tuple[int, ...], num_segments: int,
                    device: torch.device | str | None = None) -> IndexMap:
    """The map ``0, 1, ..., num_segments - 1`` for every element of ``batch_shape``."""
    batch_shape = tuple(batch_shape)
    indices = torch.arange(int(num_segments), device=device)
    indices = indices.view(*([1] * len(batch_shape)), -1).expand(*batch_shape, -1).contiguous()
    return IndexMap(indices, num_segments, len(batch_shape))


def _check_values(values: Tensor, index: IndexMap, what: str) -> None:
    prefix = values.shape[: index.indices.dim()]
    if prefix != index.indices.shape:
        raise ShapeError(f"{what}: values of shape {tuple(values.shape)} must start with the index map's shape "
                         f"{tuple(index.indices.shape)}; pass one value (or vector) per indexed position")


def _segment_reduce(values: Tensor, index: IndexMap, how: str) -> tuple[Tensor, IndexMap]:
    _check_values(values, index, f"reduce ({how})")
    flat = flatten(index)
    vector_shape = values.shape[index.indices.dim():]
    # integer and half-precision values are reduced in float32 (means of ids, sums of bf16 logits),
    # then cast back so the caller gets its own dtype
    work_dtype = values.dtype if values.dtype in (torch.float32, torch.float64) else torch.float32
    src = values.reshape(-1, *vector_shape).to(work_dtype)
    target = flat.indices.view(-1, *([1] * len(vector_shape))).expand_as(src)
    out = src.new_zeros((flat.num_segments, *vector_shape))
    # include_self=False: an empty segment keeps the zero it starts with (also for max and min)
    out = out.scatter_reduce(0, target, src, reduce=how, include_self=False)
    out = out.view(*index.batch_shape, index.num_segments, *vector_shape).to(values.dtype)
    return out, range_index_map(index.batch_shape, index.num_segments, device=index.indices.device)


def reduce_sum(values: Tensor, index: IndexMap) -> tuple[Tensor, IndexMap]:
    """Sum per segment: values (B..., I..., V...) -> (B..., num_segments, V...) and the range map over it.

    Empty segments give 0.
    """
    return _segment_reduce(values, index, "sum")


def reduce_mean(values: Tensor, index: IndexMap) -> tuple[Tensor, IndexMap]:
    """Mean per segment (0 for empty segments); shapes as :func:`reduce_sum`."""
    return _segment_reduce(values, index, "mean")


def reduce_max(values: Tensor, index: IndexMap) -> tuple[Tensor, IndexMap]:
    """Maximum per segment (0 for empty segments); shapes as :func:`reduce_sum`."""
    return _segment_reduce(values, index, "amax")


def reduce_min(values: Tensor, index: IndexMap) -> tuple[Tensor, IndexMap]:
    """Minimum per segment (0 for empty segments); shapes as :func:`reduce_sum`."""
    return _segment_reduce(values, index, "amin")


def gather(values: Tensor, index: IndexMap) -> Tensor:
    """Per-segment values back to positions: (B..., num_segments, V...) -> (B..., I..., V...).

    Every position of a segment gets that segment's value (or vector).
    """
    batch_dims = index.batch_dims
    if values.shape[:batch_dims] != index.batch_shape or values.dim() <= batch_dims \
            or values.shape[batch_dims] != index.num_segments:
        raise ShapeError(f"gather: values of shape {tuple(values.shape)} must be (batch {tuple(index.batch_shape)}, "
                         f"num_segments {index.num_segments}, ...); reduce over the same index map first")
    vector_shape = values.shape[batch_dims + 1:]
    positions = index.indices.reshape(*index.batch_shape, -1)
    positions = positions.view(*positions.shape, *([1] * len(vector_shape))).expand(*positions.shape, *vector_shape)
    out = torch.gather(values, batch_dims, positions)
    return out.view(*index.indices.shape, *vector_shape)


@dataclass(frozen=True)
class TableIndex:
    """The index maps and masks of a batch of tables flattened into token sequences.

    ``row_index`` and ``column_index`` group the (B, L) tokens by row and by column (id 0 is the
    question and the header row / the question), ``cell_index`` by (row, column) cell.
    ``input_mask`` is the attention mask as floats, ``table_mask`` is 1 on table-body tokens (row
    id > 0) and ``cell_mask`` (B, rows * columns) is 1 for cells that hold at least one attended
    token (the mean of the attention mask over the cell, as TAPAS computes it).
    """

    row_index: IndexMap
    column_index: IndexMap
    cell_index: ProductIndexMap
    input_mask: Tensor
    table_mask: Tensor
    cell_mask: Tensor

    @classmethod
    def from_token_type_ids(cls, token_type_ids: Tensor, attention_mask: Tensor | None = None,
                            max_num_rows: int = 64, max_num_columns: int = 32,
                            table_mask: Tensor | None = None) -> "TableIndex":
        """Build the maps from TAPAS' (B, L, 7) token types; ids beyond the limits share the last segment."""
        if token_type_ids.dim() != 3 or token_type_ids.shape[-1] <= ROW_TYPE:
            raise ShapeError(f"token_type_ids must be (batch, length, 7) with the column ids at [..., {COLUMN_TYPE}] "
                             f"and the row ids at [..., {ROW_TYPE}], got shape {tuple(token_type_ids.shape)}; "
                             "pass the token types the TAPAS tokenizer returns")
        shape = token_type_ids.shape[:2]
        for name, mask in (("attention_mask", attention_mask), ("table_mask", table_mask)):
            if mask is not None and mask.shape != shape:
                raise ShapeError(f"{name} must be (batch, length) = {tuple(shape)} like token_type_ids, "
                                 f"got {tuple(mask.shape)}")
        row_ids = token_type_ids[..., ROW_TYPE].long()
        column_ids = token_type_ids[..., COLUMN_TYPE].long()
        # as in TAPAS, rows and columns past the head's limits are merged into the last segment
        row_index = IndexMap(row_ids.clamp(max=max_num_rows - 1), max_num_rows, batch_dims=1)
        column_index = IndexMap(column_ids.clamp(max=max_num_columns - 1), max_num_columns, batch_dims=1)
        cell_index = ProductIndexMap(row_index, column_index)
        input_mask = (torch.ones(shape, device=token_type_ids.device) if attention_mask is None
                      else attention_mask.float())
        table = (row_ids > 0) if table_mask is None else table_mask
        cell_mask, _ = reduce_mean(input_mask, cell_index)
        return cls(row_index, column_index, cell_index, input_mask, table.float(), cell_mask)
