"""TAPAS' training losses and column head, as plain functions of tensors.

Cell selection is learnt either token by token (a weighted binary cross-entropy) or, with
``select_one_column``, hierarchically: first a column (a softmax over column logits, column 0 meaning
"no cell"), then the cells inside the gold column. Aggregation (NONE, SUM, AVERAGE, COUNT) is learnt
in one of two ways:

* **strong supervision**: the aggregation label of every example is known (WikiSQL-supervised, our
  templated questions) and the aggregation head gets a cross-entropy;
* **weak supervision** (``use_answer_as_supervision``): only the answer is known. Examples whose
  answer is not a number, or that the model already treats as cell selection while cells are
  labelled, are trained to predict NONE; the rest to put mass on any aggregation, plus a Huber loss
  between the answer and the *expected result* of the soft aggregation over the soft cell selection.
  Examples whose answer loss exceeds ``answer_loss_cutoff`` contribute nothing.

:func:`question_answering_loss` assembles the total exactly as ``TapasForQuestionAnswering`` does;
the pieces are public so that each can be tested on its own. Config values come in through
:class:`TapasLossOptions`, whose field names are those of TAPAS' ``config.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from polyformer.errors import ConfigError, DataError, ShapeError
from polyformer.models.tapas_segments import IndexMap, ProductIndexMap, TableIndex, gather, reduce_max, \
    reduce_mean, reduce_sum

__all__ = [
    "AVERAGE_APPROXIMATIONS",
    "CLOSE_ENOUGH_TO_LOG_ZERO",
    "QuestionAnsweringLoss",
    "TapasLossOptions",
    "aggregate_mask",
    "aggregation_loss",
    "compute_column_logits",
    "expected_result",
    "huber_loss",
    "question_answering_logits",
    "question_answering_loss",
    "regression_loss",
    "single_column_cell_selection_loss",
    "single_column_logits",
    "token_selection_loss",
]

#: added to a logit to make its probability zero (a large finite value keeps gradients finite)
CLOSE_ENOUGH_TO_LOG_ZERO = -10000.0
#: keeps the divisions of empty sums finite
EPSILON_ZERO_DIVISION = 1e-10
AVERAGE_APPROXIMATIONS = ("ratio", "first_order", "second_order")


@dataclass(frozen=True)
class TapasLossOptions:
    """The configuration values the losses read (names and defaults of ``TapasConfig``)."""

    num_aggregation_labels: int = 0
    select_one_column: bool = True
    allow_empty_column_selection: bool = False
    average_logits_per_cell: bool = False
    positive_label_weight: float = 10.0
    disable_per_token_loss: bool = False
    use_answer_as_supervision: bool | None = None
    cell_selection_preference: float | None = None
    aggregation_loss_weight: float = 1.0
    answer_loss_importance: float = 1.0
    use_normalized_answer_loss: bool = False
    huber_loss_delta: float | None = None
    answer_loss_cutoff: float | None = None
    temperature: float = 1.0
    aggregation_temperature: float = 1.0
    use_gumbel_for_cells: bool = False
    use_gumbel_for_aggregation: bool = False
    average_approximation_function: str = "ratio"
    max_num_rows: int = 64
    max_num_columns: int = 32

    def __post_init__(self) -> None:
        # accept transformers' AverageApproximationFunction enum as well as its string value
        name = str(getattr(self.average_approximation_function, "value", self.average_approximation_function)).lower()
        if name not in AVERAGE_APPROXIMATIONS:
            raise ConfigError(f"average_approximation_function {self.average_approximation_function!r} is unknown; "
                              f"choose one of {AVERAGE_APPROXIMATIONS}")
        object.__setattr__(self, "average_approximation_function", name)
        for field in ("temperature", "aggregation_temperature"):
            if not getattr(self, field) > 0:
                raise ConfigError(f"{field} must be positive, got {getattr(self, field)}")
        if self.max_num_rows < 1 or self.max_num_columns < 1:
            raise ConfigError(f"max_num_rows and max_num_columns must be at least 1, got "
                              f"{self.max_num_rows} and {self.max_num_columns}")

    @classmethod
    def from_config(cls, config: Any) -> "TapasLossOptions":
        """Read the fields from any config object (ours or ``transformers.TapasConfig``); missing ones keep defaults."""
        values = {f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)}
        return cls(**values)

    @property
    def weakly_supervised(self) -> bool:
        """Aggregation learnt from the answer alone (``use_answer_as_supervision`` with an aggregation head)."""
        return self.num_aggregation_labels > 0 and bool(self.use_answer_as_supervision)


class QuestionAnsweringLoss(NamedTuple):
    """The total loss and the cell logits the model reports (column-masked when ``select_one_column``)."""

    loss: Tensor
    logits: Tensor


# ------------------------------------------------------------------------------------------------
# Cell selection
# ------------------------------------------------------------------------------------------------
def compute_column_logits(sequence_output: Tensor, column_output_weights: Tensor, column_output_bias: Tensor,
                          cell_index: ProductIndexMap, cell_mask: Tensor,
                          allow_empty_column_selection: bool) -> Tensor:
    """Column scores (B, max_num_columns): token scores averaged per cell, then over the column's cells.

    Columns without cells get a log-zero score; so does column 0 ("select nothing") unless
    ``allow_empty_column_selection``.
    """
    token_logits = sequence_output @ column_output_weights + column_output_bias
    cell_logits, cell_range = reduce_mean(token_logits, cell_index)
    column_of_cell = cell_index.project_inner(cell_range)
    column_sum, column_range = reduce_sum(cell_logits * cell_mask, column_of_cell)
    cell_count, _ = reduce_sum(cell_mask, column_of_cell)
    column_logits = column_sum / (cell_count + EPSILON_ZERO_DIVISION)
    is_column_zero = column_range.indices == 0
    is_padding = (cell_count < 0.5) & ~is_column_zero
    column_logits = column_logits + CLOSE_ENOUGH_TO_LOG_ZERO * is_padding.float()
    if not allow_empty_column_selection:
        column_logits = column_logits + CLOSE_ENOUGH_TO_LOG_ZERO * is_column_zero.float()
    return column_logits


def _column_of_cells(cell_index: ProductIndexMap, batch_shape: torch.Size) -> Tensor:
    """(B, rows * columns): the column id of every cell segment."""
    cells = torch.arange(cell_index.num_segments, device=cell_index.indices.device)
    return torch.remainder(cells, cell_index.inner_index.num_segments).expand(*batch_shape, -1)


def single_column_logits(token_logits: Tensor, column_logits: Tensor, cell_index: ProductIndexMap,
                         cell_mask: Tensor) -> Tensor:
    """Token logits restricted to the model's best column: the cell mean there, log-zero everywhere else.

    Tokens outside the table (column 0) and in padded cells are never selected.
    """
    logits_per_cell, _ = reduce_mean(token_logits, cell_index)
    column_of_cells = _column_of_cells(cell_index, logits_per_cell.shape[:-1])
    selected = column_logits.argmax(dim=-1, keepdim=True)
    in_column = ((column_of_cells == selected) & (column_of_cells != 0)).float()
    logits_per_cell = logits_per_cell + CLOSE_ENOUGH_TO_LOG_ZERO * (1.0 - cell_mask * in_column)
    return gather(logits_per_cell, cell_index)


def single_column_cell_selection_loss(token_logits: Tensor, column_logits: Tensor, labels: Tensor,
                                      cell_index: ProductIndexMap, column_index: IndexMap,
                                      cell_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Hierarchical cell-selection loss per example (B,) and the column-restricted logits (B, L).

    The gold column is the one with the most labelled tokens (column 0 when nothing is labelled);
    the loss is its negative log-probability plus, when cells are labelled, the mean Bernoulli
    negative log-likelihood of the cells of that column.
    """
    labels_per_column, _ = reduce_sum(labels.float(), column_index)
    most, column_label = labels_per_column.max(dim=-1)
    no_cell_selected = most == 0
    column_label = torch.where(no_cell_selected, torch.zeros_like(column_label), column_label)
    column_loss = F.cross_entropy(column_logits, column_label, reduction="none")

    logits_per_cell, _ = reduce_mean(token_logits, cell_index)
    labels_per_cell, _ = reduce_max(labels.float(), cell_index)
    column_of_cells = _column_of_cells(cell_index, logits_per_cell.shape[:-1])
    in_gold_column = (column_of_cells == column_label.unsqueeze(-1)).float() * cell_mask
    cell_nll = F.binary_cross_entropy_with_logits(logits_per_cell, labels_per_cell, reduction="none")
    cell_loss = (cell_nll * in_gold_column).sum(-1) / (in_gold_column.sum(-1) + EPSILON_ZERO_DIVISION)
    loss = column_loss + torch.where(no_cell_selected, torch.zeros_like(cell_loss), cell_loss)
    return loss, single_column_logits(token_logits, column_logits, cell_index, cell_mask)


def token_selection_loss(logits: Tensor, labels: Tensor, input_mask: Tensor, positive_label_weight: float) -> Tensor:
    """Per-example (B,) mean over attended tokens of the Bernoulli NLL, positives weighted ``positive_label_weight``."""
    target = labels.float()
    weight = torch.where(labels == 0, torch.ones_like(target), torch.full_like(target, positive_label_weight))
    nll = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight
    return (nll * input_mask).sum(-1) / (input_mask.sum(-1) + EPSILON_ZERO_DIVISION)


# ------------------------------------------------------------------------------------------------
# Aggregation
# ------------------------------------------------------------------------------------------------
def aggregate_mask(float_answer: Tensor, logits_aggregation: Tensor, cell_selection_preference: float,
                   labels: Tensor) -> Tensor:
    """(B,) 1 for examples trained to aggregate, 0 for those trained to select cells (no gradient).

    A non-numeric answer (NaN) always means cell selection; a numeric one means aggregation unless
    the model already prefers NONE (aggregation mass <= ``cell_selection_preference``) and the
    example has labelled cells.
    """
    is_numeric = (~torch.isnan(float_answer)).float()
    aggregation_mass = logits_aggregation.softmax(-1)[:, 1:].sum(-1)
    selects_cells = (aggregation_mass <= cell_selection_preference) & (labels.sum(-1) > 0)
    return torch.where(selects_cells, torch.zeros_like(is_numeric), is_numeric).detach()


def aggregation_loss(logits_aggregation: Tensor, aggregate_mask: Tensor | None, aggregation_labels: Tensor,
                     use_answer_as_supervision: bool, num_aggregation_labels: int,
                     aggregation_loss_weight: float) -> Tensor:
    """Per-example (B,) aggregation loss.

    Strong supervision: cross-entropy against ``aggregation_labels``. Weak supervision: NONE for
    cell-selection examples, and ``-log P(any aggregation)`` for the examples in ``aggregate_mask``.
    """
    if logits_aggregation.shape[-1] != num_aggregation_labels:
        raise ShapeError(f"logits_aggregation has {logits_aggregation.shape[-1]} scores per example but "
                         f"num_aggregation_labels is {num_aggregation_labels}")
    log_probs = logits_aggregation.log_softmax(-1)
    if use_answer_as_supervision:
        if aggregate_mask is None:
            raise ConfigError("aggregation_loss with use_answer_as_supervision needs aggregate_mask; "
                              "compute it with aggregate_mask(float_answer, ...)")
        # NONE is known only for cell-selection examples; for the others any aggregation will do
        # (log of the summed probability, computed stably as a logsumexp)
        loss = -log_probs[:, 0] * (1 - aggregate_mask) - log_probs[:, 1:].logsumexp(-1) * aggregate_mask
    else:
        labels = aggregation_labels.long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_aggregation_labels):
            raise DataError(f"aggregation_labels must lie in [0, {num_aggregation_labels}), got values from "
                            f"{int(labels.min())} to {int(labels.max())}")
        loss = -log_probs.gather(-1, labels.view(-1, 1)).squeeze(-1)
    return aggregation_loss_weight * loss


# ------------------------------------------------------------------------------------------------
# Weak supervision: the answer loss
# ------------------------------------------------------------------------------------------------
def _uniform(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    # the same draw torch.distributions makes (torch.rand, clamped away from 0 and 1), so a seeded
    # run samples the same noise as transformers
    eps = torch.finfo(like.dtype).eps
    return torch.rand(shape, dtype=like.dtype, device=like.device, generator=generator).clamp(eps, 1 - eps)


def _cell_probabilities(logits: Tensor, options: TapasLossOptions, generator: torch.Generator | None) -> Tensor:
    if not options.use_gumbel_for_cells:
        return torch.sigmoid(logits)
    # a relaxed Bernoulli sample at the head's temperature: the logits were divided by it, so they
    # are multiplied back before the logistic noise is added. The sample keeps its gradient
    # (reparameterised), which is what the relaxation is for.
    temperature = options.temperature
    eps = torch.finfo(logits.dtype).eps
    limit = math.log((1 - eps) / eps)
    u = _uniform(logits.shape, logits, generator)
    noisy = (logits * temperature).clamp(-limit, limit) + u.log() - torch.log1p(-u)
    return torch.sigmoid(noisy / temperature)


def _aggregation_probabilities(logits_aggregation: Tensor, options: TapasLossOptions,
                               generator: torch.Generator | None) -> Tensor:
    logits = logits_aggregation[:, 1:]
    if options.use_gumbel_for_aggregation:
        u = _uniform(logits.shape, logits, generator)
        logits = logits - torch.log(-torch.log(u))
    return (logits / options.aggregation_temperature).softmax(-1)


def expected_result(token_logits: Tensor, numeric_values: Tensor, numeric_values_scale: Tensor,
                    table_mask: Tensor, logits_aggregation: Tensor, options: TapasLossOptions,
                    generator: torch.Generator | None = None) -> Tensor:
    """(B,) the answer the soft aggregation gives over the soft cell selection.

    SUM, AVERAGE and COUNT are computed from each table token's selection probability (divided by
    its ``numeric_values_scale``, the number of tokens sharing the value) and weighted by the
    aggregation probabilities of those three operators. AVERAGE follows
    ``average_approximation_function``: ``ratio`` (sum / count), or the first- or second-order
    approximation of the expected mean of a random subset. With ``use_gumbel_for_*`` the
    probabilities are relaxed samples (``generator`` seeds them; none uses the global generator).
    """
    if logits_aggregation.shape[-1] != 4:
        raise ConfigError(f"the expected result needs 4 aggregation labels (NONE, SUM, AVERAGE, COUNT in that "
                          f"order), got {logits_aggregation.shape[-1]}; set num_aggregation_labels=4")
    probs = _cell_probabilities(token_logits, options, generator)
    scaled = probs / numeric_values_scale * table_mask
    values = torch.where(torch.isnan(numeric_values), torch.zeros_like(numeric_values), numeric_values)
    count = scaled.sum(-1)
    total = (scaled * values).sum(-1)
    how = options.average_approximation_function
    if how == "ratio":
        average = total / (count + EPSILON_ZERO_DIVISION)
    else:
        # expected size of the selected set given that this token is in it (the other tokens'
        # probabilities plus one)
        others_plus_one = count.unsqueeze(-1) - scaled + 1
        if how == "first_order":
            average = (values * scaled / others_plus_one).sum(-1)
        else:
            pointwise_var = scaled * (1 - scaled)
            var = pointwise_var.sum(-1, keepdim=True) - pointwise_var
            multiplier = (var / others_plus_one.square() + 1) / others_plus_one
            average = (values * scaled * multiplier).sum(-1)
    operators = _aggregation_probabilities(logits_aggregation, options, generator)
    return (torch.stack([total, average, count], dim=-1) * operators).sum(-1)


def huber_loss(input: Tensor, target: Tensor, delta: float = 1.0) -> Tensor:
    """Elementwise Huber loss: quadratic below ``delta``, linear above."""
    return F.huber_loss(input, target, reduction="none", delta=delta)


def regression_loss(float_answer: Tensor, aggregate_mask: Tensor, token_logits: Tensor, numeric_values: Tensor,
                    numeric_values_scale: Tensor, table_mask: Tensor, logits_aggregation: Tensor,
                    options: TapasLossOptions, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The answer loss per example (B,) and the mask (B,) that is 0 where it exceeds ``answer_loss_cutoff``.

    Huber between the expected result and the answer on the examples in ``aggregate_mask``, either
    with ``huber_loss_delta`` or, with ``use_normalized_answer_loss``, on both divided by the larger
    magnitude (delta 1); scaled by ``answer_loss_importance``.
    """
    result = expected_result(token_logits, numeric_values, numeric_values_scale, table_mask, logits_aggregation,
                             options, generator)
    answer = torch.where(torch.isnan(float_answer), torch.zeros_like(float_answer), float_answer)
    if options.use_normalized_answer_loss:
        normaliser = (torch.maximum(result.abs(), answer.abs()) + EPSILON_ZERO_DIVISION).detach()
        loss = huber_loss(result / normaliser * aggregate_mask, answer / normaliser * aggregate_mask)
    else:
        if options.huber_loss_delta is None:
            raise ConfigError("the weakly supervised answer loss needs huber_loss_delta (e.g. 0.1218 for WTQ) "
                              "unless use_normalized_answer_loss is set")
        loss = huber_loss(result * aggregate_mask, answer * aggregate_mask, delta=options.huber_loss_delta)
    if options.answer_loss_cutoff is None:
        keep = torch.ones_like(loss)
    else:
        keep = (~(loss > options.answer_loss_cutoff)).float()
    return options.answer_loss_importance * loss * aggregate_mask, keep


# ------------------------------------------------------------------------------------------------
# The total
# ------------------------------------------------------------------------------------------------
def _require(value: Tensor | None, name: str, shape: tuple[int, ...], why: str) -> Tensor:
    if value is None:
        raise ConfigError(f"{name} is needed {why}; pass it to forward (the TAPAS tokenizer returns it)")
    if tuple(value.shape) != shape:
        raise ShapeError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    return value


def question_answering_logits(token_logits: Tensor, column_logits: Tensor | None, table: TableIndex,
                              options: TapasLossOptions) -> Tensor:
    """The cell logits the model reports without labels (restricted to one column when ``select_one_column``).

    Without ``select_one_column`` these are the token logits themselves (``transformers`` fails
    there, as it applies the column restriction with no column logits).
    """
    if not options.select_one_column:
        return token_logits
    if column_logits is None:
        raise ConfigError("select_one_column needs column_logits; compute them with compute_column_logits")
    return single_column_logits(token_logits, column_logits, table.cell_index, table.cell_mask)


def question_answering_loss(token_logits: Tensor, column_logits: Tensor | None, logits_aggregation: Tensor | None,
                            table: TableIndex, labels: Tensor, options: TapasLossOptions, *,
                            aggregation_labels: Tensor | None = None, float_answer: Tensor | None = None,
                            numeric_values: Tensor | None = None, numeric_values_scale: Tensor | None = None,
                            generator: torch.Generator | None = None) -> QuestionAnsweringLoss:
    """TAPAS' total question-answering loss and the logits it reports, as ``TapasForQuestionAnswering``.

    ``token_logits`` (B, L) are the temperature-scaled cell-selection scores, ``column_logits``
    (B, max_num_columns) those of :func:`compute_column_logits` (needed with ``select_one_column``),
    ``logits_aggregation`` (B, num_aggregation_labels), ``labels`` (B, L) 1 on answer tokens.
    Strong supervision also needs ``aggregation_labels`` (B,) when there is an aggregation head;
    weak supervision (:attr:`TapasLossOptions.weakly_supervised`) needs ``float_answer`` (B, NaN for
    cell answers), ``numeric_values`` and ``numeric_values_scale`` (B, L).
    """
    batch, length = token_logits.shape
    _require(labels, "labels", (batch, length), "for the loss")
    if table.input_mask.shape != (batch, length):
        raise ShapeError(f"the table index covers {tuple(table.input_mask.shape)} tokens but token_logits is "
                         f"{(batch, length)}; build it from the same token_type_ids")
    weak = options.weakly_supervised
    mask = None
    if options.num_aggregation_labels > 0:
        logits_aggregation = _require(logits_aggregation, "logits_aggregation",
                                      (batch, options.num_aggregation_labels), "with num_aggregation_labels > 0")
    if weak:
        float_answer = _require(float_answer, "float_answer", (batch,),
                                "for weak supervision (use_answer_as_supervision); NaN marks cell answers")
        if options.cell_selection_preference is None:
            raise ConfigError("weak supervision (use_answer_as_supervision) needs cell_selection_preference, "
                              "e.g. 0.207951 as in TAPAS' WTQ config")
        mask = aggregate_mask(float_answer, logits_aggregation, options.cell_selection_preference, labels)

    logits = token_logits
    if options.average_logits_per_cell:
        logits = gather(reduce_mean(logits, table.cell_index)[0], table.cell_index)
    if options.select_one_column:
        if column_logits is None:
            raise ConfigError("select_one_column needs column_logits; compute them with compute_column_logits")
        selection, logits = single_column_cell_selection_loss(logits, column_logits, labels, table.cell_index,
                                                              table.column_index, table.cell_mask)
    else:
        selection = token_selection_loss(logits, labels, table.input_mask, options.positive_label_weight)

    total = token_logits.new_zeros(())
    if not options.disable_per_token_loss:
        # weakly supervised examples that aggregate are not trained to select their labelled cells
        total = total + (selection * (1.0 - mask) if weak else selection).mean()
    if options.num_aggregation_labels > 0:
        if weak:
            aggregation_labels = torch.zeros(batch, dtype=torch.long, device=token_logits.device)
        else:
            aggregation_labels = _require(aggregation_labels, "aggregation_labels", (batch,),
                                          "for strongly supervised aggregation")
        extra = aggregation_loss(logits_aggregation, mask, aggregation_labels, weak, options.num_aggregation_labels,
                                 options.aggregation_loss_weight)
        if weak:
            why = "for the weakly supervised answer loss"
            values = _require(numeric_values, "numeric_values", (batch, length), why)
            scale = _require(numeric_values_scale, "numeric_values_scale", (batch, length), why)
            answer_loss, keep = regression_loss(float_answer, mask, logits, values, scale, table.table_mask,
                                                logits_aggregation, options, generator)
            # examples whose answer is too far off (answer_loss_cutoff) contribute nothing at all
            extra = (extra + answer_loss) * keep
        total = total + extra.mean()
    return QuestionAnsweringLoss(total, logits)
