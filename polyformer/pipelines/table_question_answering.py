"""``pipeline("table-question-answering", model=FOLDER)``: a table and questions in, answer cells out.

The call and the output follow ``transformers``' pipeline for TAPAS models::

    table_qa = pipeline("table-question-answering", model="my-tapas")
    table_qa(table, "How many chapters have more than 20 pages?")
    # {"answer": "COUNT > 1, 2, 3", "coordinates": [(0, 0), (1, 0), (2, 0)], "cells": ["1", "2", "3"],
    #  "aggregator": "COUNT", "value": 3.0, "value_cells": ["1", "2", "3"], "not_numbers": []}

Inputs: ``(table, query)``, ``table=..., query=...``, ``{"table": ..., "query": ...}`` or a list of
such dicts. The table is a ``pandas.DataFrame`` or a dict of columns; ``query`` one question (one
answer dict back) or a list (a list back, one per question). A cell is selected when the mean
probability of its tokens is above ``cell_classification_threshold`` (0.5); a model with an
aggregation head names its aggregator, and ``answer`` is ``"AGGREGATOR > cell, cell"`` unless the
prediction is the config's ``no_aggregation_label_index``. With ``sequential=True`` questions are
read as a conversation (SQA): each question's "previous answer" token type marks the cells the
previous question selected, so the questions run one at a time.

What it does beyond ``transformers``:

* **The value of an aggregated answer.** SUM, AVERAGE and COUNT answers carry ``"value"`` (the
  sum, mean or count of the selected cells, numbers read as the table tokenizer reads them),
  ``"value_cells"`` (the cells the value used) and ``"not_numbers"`` (selected cells holding no
  number, left out of SUM and AVERAGE: reported, never an error).
* **Cells need not be strings.** Numbers, dates and missing values (a table from Parquet or built
  in code) are read as their text; ``cells`` and ``answer`` always hold text.
* **A list of questions gives a list**, even of one (``transformers`` returns a bare dict then).
* Questions go through the model ``batch_size`` at a time, each batch cut to its longest question.
* Bad input raises a named error: an empty table, duplicate or unnamed columns, an empty question.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from polyformer.errors import ConfigError, DataError
from polyformer.pipelines import register_pipeline
from polyformer.pipelines.table_answers import AGGREGATIONS, aggregate_value, text_table
from polyformer.pipelines.text_base import check_batch_size, forward, forward_batches, load_text_model

__all__ = ["TableQuestionAnsweringPipeline", "check_table_model"]

TASK = "table-question-answering"
_PADDING = (True, False, "longest", "max_length", "do_not_pad")
_TRUNCATION = (True, False, "drop_rows_to_fit", "do_not_truncate")


def check_table_model(model: nn.Module) -> None:
    """Refuse a model that is not a table question-answering model (TAPAS with its cell-selection head)."""
    config = getattr(model, "config", None)
    if not type(model).__name__.endswith("ForQuestionAnswering") or not hasattr(config, "type_vocab_sizes"):
        raise ConfigError(f"{TASK} needs a TAPAS model with its cell-selection head (TapasForQuestionAnswering); "
                          f"got a {type(model).__name__}")


class TableQuestionAnsweringPipeline:
    """A TAPAS question-answering model, its table tokenizer and ``transformers``' post-processing."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, batch_size: int = 32, sequential: bool = False,
                 padding: bool | str = True, truncation: bool | str = "drop_rows_to_fit",
                 cell_classification_threshold: float = 0.5) -> None:
        check_table_model(model)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size = check_batch_size(batch_size)
        self.sequential = _check_flag("sequential", sequential)
        self.padding = _check_choice("padding", padding, _PADDING)
        self.truncation = _check_choice("truncation", truncation, _TRUNCATION)
        self.threshold = _check_threshold(cell_classification_threshold)
        config = model.config
        labels = getattr(config, "aggregation_labels", None) or {}
        self.aggregation_labels = {int(k): str(v) for k, v in dict(labels).items()}
        # as transformers: aggregators are named only when the config has both the head and the names
        self.aggregate = bool(self.aggregation_labels) and bool(getattr(config, "num_aggregation_labels", 0))
        self.no_aggregation_index = getattr(config, "no_aggregation_label_index", None)

    # -- the call ---------------------------------------------------------------------------------
    def __call__(self, table: Any = None, query: Any = None, *, sequential: bool | None = None,
                 padding: bool | str | None = None, truncation: bool | str | None = None,
                 batch_size: int | None = None, cell_classification_threshold: float | None = None) -> Any:
        """Answer the questions; see the module docstring for the inputs and the output."""
        options = {
            "sequential": self.sequential if sequential is None else _check_flag("sequential", sequential),
            "padding": self.padding if padding is None else _check_choice("padding", padding, _PADDING),
            "truncation": self.truncation if truncation is None else _check_choice("truncation", truncation,
                                                                                   _TRUNCATION),
            "batch_size": self.batch_size if batch_size is None else check_batch_size(batch_size),
            "threshold": self.threshold if cell_classification_threshold is None else _check_threshold(
                cell_classification_threshold),
        }
        requests, several = _requests(table, query)
        results = []
        for frame, queries, single in requests:
            answers = self.answer(frame, queries, **options)
            results.append(answers[0] if single else answers)
        return results if several else results[0]

    def answer(self, table: pd.DataFrame, queries: list[str], *, sequential: bool = False, padding: Any = True,
               truncation: Any = "drop_rows_to_fit", batch_size: int = 32, threshold: float = 0.5) -> list[dict]:
        """One answer dict per question about one (text) table."""
        # without padding the questions cannot share a batch: each is encoded and run alone
        groups = [queries] if padding not in (False, "do_not_pad") else [[q] for q in queries]
        answers: list[dict[str, Any]] = []
        previous: list[tuple[int, int]] | None = None
        for group in groups:
            inputs = self.encode(table, group, padding=padding, truncation=truncation)
            if sequential:
                logits, aggregation, previous = self.sequential_logits(inputs, previous)
            else:
                logits, aggregation = self.logits(inputs, batch_size)
            answers.extend(self.postprocess(table, inputs, logits, aggregation, threshold))
        return answers

    # -- the steps (public: the benchmark times them apart) -------------------------------------------
    def encode(self, table: pd.DataFrame, queries: list[str], *, padding: Any = True,
               truncation: Any = "drop_rows_to_fit") -> dict[str, Tensor]:
        """The tokenizer's ``input_ids``, ``attention_mask`` and ``token_type_ids`` (B, L, 7)."""
        encoded = self.tokenizer(table, queries, padding=padding, truncation=truncation, return_tensors="pt")
        return {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

    def logits(self, inputs: dict[str, Tensor], batch_size: int) -> tuple[Tensor, Tensor | None]:
        """Token logits (B, L) and aggregation logits (B, A) or None, ``batch_size`` questions at a time."""
        count, width = inputs["input_ids"].shape
        logits = torch.full((count, width), -10000.0)
        aggregation: Tensor | None = None
        for rows, _, output in forward_batches(self.model, inputs, batch_size):
            index = torch.tensor(rows)
            part = output.logits.float().cpu()
            logits[index, : part.shape[1]] = part
            if self.aggregate:
                scores = output.logits_aggregation.float().cpu()
                if aggregation is None:
                    aggregation = torch.zeros(count, scores.shape[1])
                aggregation[index] = scores
        return logits, aggregation

    def sequential_logits(self, inputs: dict[str, Tensor], previous: list[tuple[int, int]] | None = None,
                          ) -> tuple[Tensor, Tensor | None, list[tuple[int, int]] | None]:
        """Logits of questions read as a conversation: each marks the cells the one before selected.

        ``previous`` carries the last selection across calls (None before the first question).
        Returns the logits, the aggregation logits and the selection of the last question.
        """
        token_types = inputs["token_type_ids"].clone()
        logits, aggregation = [], []
        for i in range(token_types.shape[0]):
            types = token_types[i]  # (L, 7)
            if previous is not None:
                types[:, 3] = _previous_labels(types, previous)
            example = {"input_ids": inputs["input_ids"][i : i + 1],
                       "attention_mask": inputs["attention_mask"][i : i + 1], "token_type_ids": types[None]}
            output = forward(self.model, example)
            row = output.logits.float().cpu()[0]
            logits.append(row)
            if self.aggregate:
                aggregation.append(output.logits_aggregation.float().cpu()[0])
            # the conversation's memory is the selection at 0.5, whatever the answer threshold
            previous = self._selected({"attention_mask": inputs["attention_mask"][i : i + 1],
                                       "token_type_ids": types[None]}, row[None], 0.5)[0]
        return torch.stack(logits), torch.stack(aggregation) if aggregation else None, previous

    def _selected(self, inputs: dict[str, Tensor], logits: Tensor, threshold: float) -> list[list[tuple[int, int]]]:
        """Per question, the sorted (row, column) cells whose tokens' mean probability is above ``threshold``
        (the tokenizer's ``convert_logits_to_predictions``)."""
        return self.tokenizer.convert_logits_to_predictions(inputs, logits, cell_classification_threshold=threshold)[0]

    def postprocess(self, table: pd.DataFrame, inputs: dict[str, Tensor], logits: Tensor,
                    aggregation: Tensor | None, threshold: float = 0.5) -> list[dict[str, Any]]:
        """Answer dicts from the logits: selected cells, the aggregator and, for SUM/AVERAGE/COUNT, the value."""
        indices = np.argmax(aggregation.numpy(), axis=-1).tolist() if aggregation is not None else None
        answers = []
        for i, coordinates in enumerate(self._selected(inputs, logits, threshold)):
            cells = [table.iat[cell] for cell in coordinates]
            answer: dict[str, Any] = {"answer": ", ".join(cells), "coordinates": coordinates, "cells": cells}
            if indices is not None:
                aggregator = self.aggregation_labels.get(indices[i], "")
                if indices[i] != self.no_aggregation_index:
                    answer["answer"] = f"{aggregator} > {answer['answer']}"
                if aggregator:
                    answer["aggregator"] = aggregator
                if aggregator.upper() in AGGREGATIONS:
                    answer.update(aggregate_value(aggregator, cells))
            answers.append(answer)
        return answers


def _previous_labels(token_types: Tensor, selected: list[tuple[int, int]]) -> Tensor:
    """The "previous answer" token type: 1 on the table tokens of the (row, column) cells the previous
    question selected."""
    segment, column, row = token_types[:, 0], token_types[:, 1] - 1, token_types[:, 2] - 1
    if not selected:
        return torch.zeros_like(segment)
    width = max(int(column.max()), max(c for _, c in selected)) + 1
    wanted = torch.tensor([r * width + c for r, c in selected])
    table_token = (segment == 1) & (column >= 0) & (row >= 0)
    return (table_token & torch.isin(row * width + column, wanted)).to(segment.dtype)


def _requests(table: Any, query: Any) -> tuple[list[tuple[pd.DataFrame, list[str], bool]], bool]:
    """(text table, questions, one question given?) per request, and whether several requests were given."""
    if query is None:
        if isinstance(table, dict) and table.get("table") is not None and table.get("query") is not None:
            return [_request(table["table"], table["query"])], False
        if isinstance(table, (list, tuple)) and table and all(isinstance(item, dict) for item in table):
            if not all(item.get("table") is not None and item.get("query") is not None for item in table):
                raise DataError("each request in a list must be a dict with a 'table' and a 'query'")
            return [_request(item["table"], item["query"]) for item in table], True
        raise DataError(f"{TASK} needs a table and a query: pipe(table, 'question'), pipe(table=..., query=[...]) "
                        "or pipe({'table': ..., 'query': ...})")
    return [_request(table, query)], False


def _request(table: Any, query: Any) -> tuple[pd.DataFrame, list[str], bool]:
    single = isinstance(query, str)
    queries = [query] if single else list(query) if isinstance(query, (list, tuple)) else None
    if queries is None:
        raise DataError(f"query must be a question (a string) or a list of them, got {type(query).__name__}")
    if not queries:
        raise DataError("the list of questions is empty; ask at least one")
    for q in queries:
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"each question must be a non-empty string, got {q!r}")
    return text_table(table), queries, single


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    if not any(value is c or (isinstance(c, str) and value == c) for c in choices):
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _check_threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"cell_classification_threshold must be a probability in [0, 1), got {value!r}")
    return float(value)


@register_pipeline(TASK)
def build_table_question_answering(model: Any, tokenizer: Any = None, **kwargs: Any) -> TableQuestionAnsweringPipeline:
    """``pipeline("table-question-answering", model=FOLDER or model, tokenizer=None, batch_size=32, sequential=False,
    padding=True, truncation="drop_rows_to_fit", cell_classification_threshold=0.5)``."""
    model, tokenizer = load_text_model(model, tokenizer, TASK)
    return TableQuestionAnsweringPipeline(model, tokenizer, **kwargs)
