"""TAPAS (Herzig et al. 2020): BERT reading a question and a flattened table, answering by selecting cells.

Each token carries seven token types (B, L, 7) — segment, column, row, previous answer, column
rank, inverse column rank, numeric relation — each with its own embedding table, summed into
BERT's embeddings (:class:`TapasEmbeddings`; positions restart at every cell when
``reset_position_index_per_cell``). The encoder and pooler are BERT's. The question-answering head
scores every token (``output_weights``, divided by ``temperature``); with ``select_one_column``
it first picks a column (``column_output_weights``) and keeps only that column's cells; the
aggregation head reads the pooled output (NONE / SUM / AVERAGE / COUNT ...). The losses — strong
supervision (cell and aggregation labels) and weak supervision (a scalar answer, Huber loss,
``answer_loss_cutoff``) — are the functions of :mod:`polyformer.models.tapas_losses`.

>>> config = TapasConfig(vocab_size=60, d_model=32, n_layers=2, n_heads=4, d_ff=64, num_aggregation_labels=4,
...                      type_vocab_sizes=(3, 8, 8, 2, 8, 8, 10))
>>> model = TapasForQuestionAnswering(config).eval()
>>> types = torch.zeros(1, 9, 7, dtype=torch.long)
>>> types[0, 4:, 1], types[0, 4:, 2] = torch.tensor([1, 2, 1, 2, 1]), torch.tensor([0, 0, 1, 1, 2])
>>> out = model(input_ids=torch.randint(0, 60, (1, 9)), token_type_ids=types)
>>> out.logits.shape, out.logits_aggregation.shape
(torch.Size([1, 9]), torch.Size([1, 4]))

Loads and saves Hugging Face ``TapasModel``, ``TapasForQuestionAnswering`` and
``TapasForSequenceClassification`` folders; ``attention=`` swaps the mechanism of every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from polyformer.convert.keymap import KeyMap
from polyformer.errors import ShapeError
from polyformer.models import register_model
from polyformer.models.bert import BertConfig, BertEmbeddings, BertModel, BertPreTrainedModel, init_bert_weights
from polyformer.models.heads import classification_loss
from polyformer.models.outputs import BaseModelOutputWithPooling, Hidden, ModelOutput, SequenceClassifierOutput
from polyformer.models.tapas_convert import tapas_key_map
from polyformer.models.tapas_losses import (
    AVERAGE_APPROXIMATIONS, TapasLossOptions, compute_column_logits, question_answering_logits, question_answering_loss,
)
from polyformer.models.tapas_segments import (
    COLUMN_TYPE, ROW_TYPE, IndexMap, ProductIndexMap, TableIndex, gather, reduce_mean, reduce_min,
)
from polyformer.options import require

__all__ = [
    "TOKEN_TYPES", "TableQuestionAnsweringOutput", "TapasConfig", "TapasEmbeddings", "TapasForQuestionAnswering",
    "TapasForSequenceClassification", "TapasModel",
]

#: what each of the seven token types encodes, in the tokenizer's order
TOKEN_TYPES = ("segment", "column", "row", "previous answer", "column rank", "inverse column rank",
               "numeric relation")


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
_TAPAS_NAMES = (
    "type_vocab_sizes", "positive_label_weight", "num_aggregation_labels", "aggregation_loss_weight",
    "use_answer_as_supervision", "answer_loss_importance", "use_normalized_answer_loss", "huber_loss_delta",
    "temperature", "aggregation_temperature", "use_gumbel_for_cells", "use_gumbel_for_aggregation",
    "average_approximation_function", "cell_selection_preference", "answer_loss_cutoff", "max_num_rows",
    "max_num_columns", "average_logits_per_cell", "select_one_column", "allow_empty_column_selection",
    "init_cell_selection_weights_to_zero", "reset_position_index_per_cell", "disable_per_token_loss",
    "aggregation_labels", "no_aggregation_label_index",
)


@dataclass
class TapasConfig(BertConfig):
    """BERT's sizes (:class:`~polyformer.models.bert.BertConfig`) plus TAPAS's, under Hugging Face's names.

    Embeddings: ``type_vocab_sizes`` (one table per token type; the first is the segment table, so
    ``type_vocab_size`` is derived from it), ``reset_position_index_per_cell``. Cell selection:
    ``temperature``, ``select_one_column``, ``allow_empty_column_selection``, ``max_num_rows`` /
    ``max_num_columns`` (larger ids share the last row / column), ``average_logits_per_cell``,
    ``positive_label_weight``, ``init_cell_selection_weights_to_zero``, ``disable_per_token_loss``.
    Aggregation: ``num_aggregation_labels`` (0 = no aggregation head), ``aggregation_labels``,
    ``aggregation_loss_weight``. Weak supervision (``use_answer_as_supervision``): ``huber_loss_delta``,
    ``answer_loss_cutoff``, ``answer_loss_importance``, ``use_normalized_answer_loss``,
    ``cell_selection_preference``, ``average_approximation_function``, ``aggregation_temperature``,
    ``use_gumbel_for_cells`` / ``use_gumbel_for_aggregation``.
    """

    model_types: ClassVar[tuple[str, ...]] = ("tapas",)
    hf_names: ClassVar[dict[str, str]] = {
        **{k: v for k, v in BertConfig.hf_names.items()
           if k not in ("type_vocab_size", "position_embedding_type", "classifier_dropout")},
        **{name: name for name in _TAPAS_NAMES},
    }

    max_position_embeddings: int = 1024
    type_vocab_sizes: tuple[int, ...] = (3, 256, 256, 2, 256, 256, 10)
    positive_label_weight: float = 10.0
    num_aggregation_labels: int = 0
    aggregation_loss_weight: float = 1.0
    use_answer_as_supervision: bool | None = None
    answer_loss_importance: float = 1.0
    use_normalized_answer_loss: bool = False
    huber_loss_delta: float | None = None
    temperature: float = 1.0
    aggregation_temperature: float = 1.0
    use_gumbel_for_cells: bool = False
    use_gumbel_for_aggregation: bool = False
    average_approximation_function: str = "ratio"
    cell_selection_preference: float | None = None
    answer_loss_cutoff: float | None = None
    max_num_rows: int = 64
    max_num_columns: int = 32
    average_logits_per_cell: bool = False
    select_one_column: bool = True
    allow_empty_column_selection: bool = False
    init_cell_selection_weights_to_zero: bool = False
    reset_position_index_per_cell: bool = True
    disable_per_token_loss: bool = False
    aggregation_labels: dict[int, str] | None = None
    no_aggregation_label_index: int | None = None

    def __post_init__(self) -> None:
        sizes = self.type_vocab_sizes
        require(isinstance(sizes, (list, tuple)) and len(sizes) > ROW_TYPE
                and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes),
                f"TapasConfig.type_vocab_sizes must list at least {ROW_TYPE + 1} positive sizes (segment, column, "
                f"row, ...), got {sizes!r}")
        self.type_vocab_sizes = tuple(sizes)
        self.type_vocab_size = sizes[0]  # the segment table is BERT's token-type table
        if self.aggregation_labels is not None:
            # config.json keys are strings
            self.aggregation_labels = {int(k): str(v) for k, v in dict(self.aggregation_labels).items()}
        require(isinstance(self.num_aggregation_labels, int) and self.num_aggregation_labels >= 0,
                f"TapasConfig.num_aggregation_labels must be an integer >= 0, got {self.num_aggregation_labels!r}")
        require(self.num_aggregation_labels != 1,
                "TapasConfig.num_aggregation_labels is 1: the first label is 'no aggregation', so an aggregation "
                "head needs at least 2 (NONE + operators); use 0 for no aggregation head")
        require(self.temperature > 0, f"TapasConfig.temperature must be > 0, got {self.temperature!r}")
        require(self.average_approximation_function in AVERAGE_APPROXIMATIONS,
                f"TapasConfig.average_approximation_function must be one of {', '.join(AVERAGE_APPROXIMATIONS)}, "
                f"got {self.average_approximation_function!r}")
        self.check_positive("max_num_rows", "max_num_columns")
        super().__post_init__()

    @property
    def weakly_supervised(self) -> bool:
        """Aggregation learnt from the answer alone (no aggregation labels), as for WTQ and WikiSQL."""
        return self.num_aggregation_labels > 0 and bool(self.use_answer_as_supervision)


# ------------------------------------------------------------------------------------------------
# Embeddings
# ------------------------------------------------------------------------------------------------
def cell_positions(token_type_ids: Tensor, n_rows: int, max_positions: int) -> Tensor:
    """Positions that restart at 0 at the first token of every (column, row) cell: (B, L, T) -> (B, L).

    The question (column 0, row 0) keeps its absolute positions; positions are capped at
    ``max_positions - 1``.
    """
    b, n = token_type_ids.shape[:2]
    columns = IndexMap(token_type_ids[..., COLUMN_TYPE], int(token_type_ids[..., COLUMN_TYPE].max()) + 1, 1)
    rows = IndexMap(token_type_ids[..., ROW_TYPE], n_rows, 1)
    cells = ProductIndexMap(columns, rows)
    position = torch.arange(n, device=token_type_ids.device).expand(b, n)
    first = gather(reduce_min(position, cells)[0], cells)  # (B, L): where each token's cell starts
    return (position - first).clamp(max=max_positions - 1)


class TapasEmbeddings(BertEmbeddings):
    """BERT's embeddings plus one table per table coordinate: (B, L) ids and (B, L, 7) types -> (B, L, d).

    ``token_type_embeddings`` (from BERT) is the segment table; ``table_embeddings[k]`` embeds
    token type ``k + 1`` (column, row, previous answer, ranks, numeric relation).
    """

    def __init__(self, config: TapasConfig) -> None:
        super().__init__(config)
        self.type_vocab_sizes = config.type_vocab_sizes
        self.table_embeddings = nn.ModuleList(nn.Embedding(size, config.d_model)
                                              for size in config.type_vocab_sizes[1:])
        self.reset_positions = config.reset_position_index_per_cell

    def forward(self, input_ids: Tensor | None = None, token_type_ids: Tensor | None = None,
                position_ids: Tensor | None = None,
                inputs_embeds: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """Embed ``input_ids`` (or take ``inputs_embeds``) with the seven token types (zeros when None)."""
        source = input_ids if input_ids is not None else inputs_embeds
        if source is None or source.dim() < 2:
            self.check_inputs(input_ids, None, position_ids, inputs_embeds)  # raises the named error
        b, n = source.shape[:2]  # type: ignore[union-attr]
        if token_type_ids is None:
            token_type_ids = torch.zeros(b, n, len(self.type_vocab_sizes), dtype=torch.long, device=source.device)
        check_token_types(token_type_ids, b, n, self.type_vocab_sizes)
        if position_ids is None and self.reset_positions:
            position_ids = cell_positions(token_type_ids, self.type_vocab_sizes[ROW_TYPE],
                                          self.position_embeddings.n_positions)
        extra = [table(token_type_ids[..., k + 1]) for k, table in enumerate(self.table_embeddings)]
        return super().forward(input_ids, token_type_ids[..., 0], position_ids, inputs_embeds, extra=extra)


def check_token_types(token_type_ids: Tensor, b: int, n: int, sizes: tuple[int, ...]) -> None:
    """A :class:`ShapeError` naming the fix unless ``token_type_ids`` is (b, n, len(sizes)) integers in ``sizes``."""
    if tuple(token_type_ids.shape) != (b, n, len(sizes)):
        raise ShapeError(f"TAPAS: token_type_ids must be (batch, length, {len(sizes)}) = {(b, n, len(sizes))}, one "
                         f"id per token type ({', '.join(TOKEN_TYPES[:len(sizes)])}), got "
                         f"{tuple(token_type_ids.shape)}; pass the token_type_ids the TAPAS tokenizer returns")
    if token_type_ids.is_floating_point():
        raise ShapeError(f"TAPAS: token_type_ids must be integers, got {token_type_ids.dtype}")
    if not token_type_ids.numel():
        return
    low, high = token_type_ids.amin(dim=(0, 1)).tolist(), token_type_ids.amax(dim=(0, 1)).tolist()
    for k, size in enumerate(sizes):
        if low[k] < 0 or high[k] >= size:
            what = TOKEN_TYPES[k] if k < len(TOKEN_TYPES) else f"type {k}"
            fix = ("the table has more rows or columns than the model embeds: drop rows (the tokenizer does with "
                   "truncation) or use a model with larger type_vocab_sizes" if k in (COLUMN_TYPE, ROW_TYPE)
                   else "pass the token_type_ids the TAPAS tokenizer of this model returns")
            raise ShapeError(f"TAPAS: token_type_ids[..., {k}] ({what}) must lie in [0, type_vocab_sizes[{k}]={size}), "
                             f"got values in [{low[k]}, {high[k]}]; {fix}")


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------
class TapasPreTrainedModel(BertPreTrainedModel):
    """What every TAPAS model shares: config, key map (``head`` names the task weights), loading and saving."""

    model_type: ClassVar[str] = "tapas"
    config_class: ClassVar[type] = TapasConfig
    hf_save_prefix: ClassVar[str] = "tapas."
    add_pooling_layer: ClassVar[bool] = True

    def _base(self, config: TapasConfig) -> "TapasModel":  # type: ignore[override]
        return TapasModel(config, add_pooling_layer=self.add_pooling_layer)

    @classmethod
    def key_map(cls, config: TapasConfig) -> KeyMap:  # type: ignore[override]
        return tapas_key_map(cls.head, n_token_types=len(config.type_vocab_sizes), pooler=cls.add_pooling_layer,
                             aggregation=cls.head == "cells" and config.num_aggregation_labels > 0)


class TapasModel(TapasPreTrainedModel, BertModel):
    """TAPAS's embeddings, BERT's post-norm encoder and the optional pooler (Hugging Face ``TapasModel``)."""

    architectures: ClassVar[tuple[str, ...]] = ("TapasModel",)
    hf_save_prefix: ClassVar[str] = ""

    def __init__(self, config: TapasConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        self.embeddings = TapasEmbeddings(config)  # in place of BERT's, which knows one token type
        init_bert_weights(self.embeddings, config.initializer_range)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None,
                inputs_embeds: Tensor | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False) -> BaseModelOutputWithPooling:
        """Hidden states (B, L, d) and the pooled first token; ``token_type_ids`` is (B, L, 7)."""
        return super().forward(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                               output_hidden_states, output_attentions)

    @classmethod
    def key_map(cls, config: TapasConfig, add_pooling_layer: bool = True) -> KeyMap:  # type: ignore[override]
        return tapas_key_map("none", n_token_types=len(config.type_vocab_sizes), pooler=add_pooling_layer, prefix="")


@dataclass
class TableQuestionAnsweringOutput(ModelOutput):
    """``logits`` (B, L) cell-selection scores of every token; ``logits_aggregation`` (B, num_aggregation_labels)
    when there is an aggregation head; ``loss`` when labels were given (Hugging Face's field names)."""

    loss: Tensor | None = None
    logits: Tensor = None  # type: ignore[assignment]
    logits_aggregation: Tensor | None = None
    hidden_states: Hidden = None
    attentions: Hidden = None


class TapasForQuestionAnswering(TapasPreTrainedModel):
    """Cell selection and aggregation over a table (Hugging Face ``TapasForQuestionAnswering``).

    ``output_weights`` / ``output_bias`` score every token (divided by ``temperature``);
    ``column_output_weights`` / ``column_output_bias`` score columns (used with ``select_one_column``);
    ``aggregation_classifier`` reads the pooled output when ``num_aggregation_labels > 0``.
    """

    architectures: ClassVar[tuple[str, ...]] = ("TapasForQuestionAnswering",)
    head = "cells"

    def __init__(self, config: TapasConfig) -> None:
        super().__init__(config)
        self.tapas = self._base(config)
        self.dropout = nn.Dropout(config.dropout)
        d = config.d_model
        self.output_weights = nn.Parameter(torch.empty(d))
        self.output_bias = nn.Parameter(torch.zeros(()))
        self.column_output_weights = nn.Parameter(torch.empty(d))
        self.column_output_bias = nn.Parameter(torch.zeros(()))
        self.aggregation_classifier = (nn.Linear(d, config.num_aggregation_labels)
                                       if config.num_aggregation_labels > 0 else None)
        self.loss_options = TapasLossOptions.from_config(config)
        self.reset_head()

    def reset_head(self) -> None:
        """Hugging Face's initialisation of the heads (cell weights at zero with
        ``init_cell_selection_weights_to_zero``, as the fine-tuned TAPAS checkpoints started)."""
        std = self.config.initializer_range
        for weights in (self.output_weights, self.column_output_weights):
            if self.config.init_cell_selection_weights_to_zero:
                nn.init.zeros_(weights)
            else:
                nn.init.normal_(weights, std=std)
        nn.init.zeros_(self.output_bias)
        nn.init.zeros_(self.column_output_bias)
        if self.aggregation_classifier is not None:
            init_bert_weights(self.aggregation_classifier, std)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        table_mask: Tensor | None = None,
        labels: Tensor | None = None,
        aggregation_labels: Tensor | None = None,
        float_answer: Tensor | None = None,
        numeric_values: Tensor | None = None,
        numeric_values_scale: Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> TableQuestionAnsweringOutput:
        """Cell logits (B, L) and aggregation logits; ``loss`` when ``labels`` (B, L) (1 on answer tokens) are given.

        Strong supervision (``use_answer_as_supervision`` off) with an aggregation head also needs
        ``aggregation_labels`` (B,); weak supervision needs ``float_answer`` (B,) (NaN for answers that
        are cells), ``numeric_values`` and ``numeric_values_scale`` (B, L), as the TAPAS tokenizer
        returns them. ``table_mask`` (B, L): 1 on table-body tokens (default: row id > 0).
        """
        config = self.config
        out = self.tapas(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                         output_hidden_states, output_attentions)
        h = self.dropout(out.last_hidden_state)  # (B, L, d)
        if token_type_ids is None:
            token_type_ids = torch.zeros(*h.shape[:2], len(config.type_vocab_sizes), dtype=torch.long, device=h.device)
        table = TableIndex.from_token_type_ids(token_type_ids, attention_mask, config.max_num_rows,
                                               config.max_num_columns, table_mask)
        token_logits = (h @ self.output_weights + self.output_bias) / config.temperature  # (B, L)
        column_logits = None
        if config.select_one_column:
            column_logits = compute_column_logits(h, self.column_output_weights, self.column_output_bias,
                                                  table.cell_index, table.cell_mask,
                                                  config.allow_empty_column_selection)  # (B, max_num_columns)
        logits_aggregation = None
        if self.aggregation_classifier is not None:
            logits_aggregation = self.aggregation_classifier(out.pooler_output)  # (B, num_aggregation_labels)
        loss = None
        if labels is None:
            if config.average_logits_per_cell:
                # as with labels, so the reported logits never depend on whether labels were given
                token_logits = gather(reduce_mean(token_logits, table.cell_index)[0], table.cell_index)
            logits = question_answering_logits(token_logits, column_logits, table, self.loss_options)
        else:
            loss, logits = question_answering_loss(
                token_logits, column_logits, logits_aggregation, table, labels, self.loss_options,
                aggregation_labels=aggregation_labels, float_answer=float_answer, numeric_values=numeric_values,
                numeric_values_scale=numeric_values_scale)
        return TableQuestionAnsweringOutput(loss, logits, logits_aggregation, out.hidden_states, out.attentions)


class TapasForSequenceClassification(TapasPreTrainedModel):
    """A linear classifier on the pooled first token, e.g. table entailment (``TapasForSequenceClassification``)."""

    architectures: ClassVar[tuple[str, ...]] = ("TapasForSequenceClassification",)
    head, head_weight = "classifier", "classifier.weight"

    def __init__(self, config: TapasConfig) -> None:
        super().__init__(config)
        self.tapas = self._base(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        init_bert_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None,
                inputs_embeds: Tensor | None = None, labels: Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> SequenceClassifierOutput:
        """Class scores (B, num_labels); ``loss`` by Hugging Face's ``problem_type`` rule when ``labels`` given."""
        out = self.tapas(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                         output_hidden_states, output_attentions)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, num_labels)
        loss = None if labels is None else classification_loss(logits, labels, self.config.problem_type)
        return SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)


# TapasModel first: a config.json without "architectures" loads as the bare encoder, as AutoModel does.
for _cls in (TapasModel, TapasForQuestionAnswering, TapasForSequenceClassification):
    register_model(_cls)
