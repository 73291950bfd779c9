"""TAPAS's table tokenizer: a question and a table -> ``[CLS] question [SEP] table``, row by row,
with seven token types per token, as ``transformers``' ``TapasTokenizer`` builds them:

=====  ==================  ======================================================================
index  name                value
=====  ==================  ======================================================================
0      segment             0 for [CLS], question and [SEP]; 1 for table tokens
1      column              1-based column of a table token (0 outside the table)
2      row                 1-based row of a cell token; 0 for header and question tokens
3      previous answer     1 where the cell answered the previous question (SQA-style batches)
4      column rank         rank of the cell's number/date in its column (1 = smallest; 0 if none)
5      inverse rank        the same from the largest
6      numeric relation    bits: the question's values are equal to (1), less than (2), greater
                           than (4) the cell's value
=====  ==================  ======================================================================

Words go through the project's WordPiece tokenizer (the ``tokenizers`` library), so ids equal
BERT's; a cell that reads as empty ("", punctuation only, "n/a", "nan", "?") becomes ``[EMPTY]``
(except the empty string, which has no tokens at all, as in ``transformers``). Each distinct
cell text is tokenised and parsed for numbers once per call, in one batch, and every feature is
a NumPy gather over the flattened table, so a batch of questions costs little more than one.

Differences from ``transformers``, all where it fails or returns inputs a model cannot use:
cells need not be strings (``table.astype(str)`` is applied per column, and a missing value --
None, NaN, NaT -- reads as the empty cell "nan"); ``truncation`` defaults to True (rows are
dropped from the bottom to fit ``max_length``; the count is in ``encoding.rows_dropped`` and a
:class:`TableTruncatedWarning`); a table that does not fit with even one row, an empty table,
duplicate or non-string column names, an empty question and answer cells that are not in the
sequence raise :class:`~polyformer.errors.DataError` saying what to change.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from polyformer.errors import ConfigError, DataError
from polyformer.processors.base import missing_files_error, register_processor, write_json_files
from polyformer.processors.table_values import (column_ranks, consolidate, is_empty_text, numeric_relations, read_table,
                                                text_values)
from polyformer.processors.tokenizer import SPECIAL_TOKEN_NAMES, BatchEncoding, read_tokenizer_settings
from polyformer.processors.wordpiece import WordPieceTokenizer, read_vocab

__all__ = ["TOKEN_TYPES", "TableTruncatedWarning", "TapasTokenizer"]

TOKEN_TYPES = ("segment_ids", "column_ids", "row_ids", "prev_labels", "column_ranks", "inv_column_ranks",
               "numeric_relations")
# options of transformers' TapasTokenizer that this class reads and writes (beyond BERT's)
_TAPAS_OPTIONS = ("empty_token", "cell_trim_length", "max_column_id", "max_row_id", "strip_column_names",
                  "update_answer_coordinates", "min_question_length", "max_question_length")


class TableTruncatedWarning(UserWarning):
    """Rows were dropped from a table so that question and table fit ``max_length``."""


class _Table:
    """A table flattened into token arrays (header row 0, then rows 1..R) with per-cell numeric features."""

    def __init__(self, tokenizer: "TapasTokenizer", header: list[str], rows: list[list[str]]) -> None:
        self.num_rows, self.num_columns = len(rows), len(header)
        if tokenizer.strip_column_names:
            header = [""] * len(header)
        grid = [header, *rows]
        pieces = tokenizer._tokenize_texts(list(dict.fromkeys(text for row in grid for text in row)))
        cells = [pieces[text] for row in grid for text in row]
        lengths = np.array([len(ids) for ids, _ in cells], dtype=np.int64)
        n_cells = len(cells)
        self.ids = np.concatenate([ids for ids, _ in cells])
        self.word_begin = np.concatenate([begin for _, begin in cells])
        self.cell = np.repeat(np.arange(n_cells), lengths)
        self.row = self.cell // self.num_columns
        self.column = self.cell % self.num_columns + 1
        self.max_cell_tokens = int(lengths.max()) if n_cells else 0
        # per cell: rank, inverse rank, float value (NaN when not a number); header cells stay 0 / NaN
        self.rank = np.zeros(n_cells, dtype=np.int64)
        self.inv_rank = np.zeros(n_cells, dtype=np.int64)
        self.number = np.full(n_cells, np.nan)
        self.columns = []
        for col in range(self.num_columns):
            values = consolidate([text_values(row[col]) for row in rows])
            self.columns.append(values)
            for r, (rank, inv) in column_ranks(values).items():
                self.rank[(r + 1) * self.num_columns + col], self.inv_rank[(r + 1) * self.num_columns + col] = rank, inv
            for r, value in values.items():
                if value.number is not None:
                    self.number[(r + 1) * self.num_columns + col] = value.number
        # cumulative[r, k]: tokens in rows <= r whose word starts at piece <= k (the cost of a cut)
        counts = np.zeros((self.num_rows + 1, max(self.max_cell_tokens, 1)), dtype=np.int64)
        np.add.at(counts, (self.row, np.maximum(self.word_begin, 0)), 1)
        self.cumulative = counts.cumsum(0).cumsum(1)

    def cost(self, rows: int, word_limit: int) -> int:
        """Table tokens kept with ``rows`` rows and words starting before piece ``word_limit`` of their cell."""
        return int(self.cumulative[rows, min(word_limit, self.cumulative.shape[1]) - 1]) if word_limit > 0 else 0

    def cell_index(self, row: int, column: int) -> int:
        """Index of data cell (row, column) (0-based, header excluded) in the per-cell arrays."""
        return (row + 1) * self.num_columns + column


class TapasTokenizer(WordPieceTokenizer):
    """``transformers``' ``TapasTokenizer``: same files, same ids and token types, much faster.

        tokenizer = TapasTokenizer.from_pretrained("tapas-folder")
        inputs = tokenizer(table, ["How many rows?", "Total of x?"], padding=True, return_tensors="pt")
        coordinates, aggregation = tokenizer.convert_logits_to_predictions(inputs, out.logits, out.logits_aggregation)
    """

    hf_class = "TapasTokenizer"

    def __init__(self, vocab: dict[str, int], *, empty_token: str = "[EMPTY]", cell_trim_length: int = -1,
                 max_column_id: int | None = None, max_row_id: int | None = None, strip_column_names: bool = False,
                 update_answer_coordinates: bool = False, min_question_length: int | None = None,
                 max_question_length: int | None = None, model_max_length: int | None = 512, **options: Any) -> None:
        from tokenizers import AddedToken

        if update_answer_coordinates:
            raise ConfigError("update_answer_coordinates=True (finding answers by their text) is not supported; "
                              "give answer_coordinates")
        vocab = dict(vocab)
        self.vocab_file_size = len(vocab)
        # transformers adds the empty-cell token after the vocabulary when the vocabulary lacks it
        vocab.setdefault(empty_token, max(vocab.values()) + 1)
        super().__init__(vocab, model_max_length=model_max_length, **options)
        self.tokenizer.add_special_tokens([AddedToken(empty_token, special=True, normalized=False)])
        self.empty_token, self.empty_token_id = empty_token, vocab[empty_token]
        limit = self.model_max_length
        self.max_column_id = max_column_id if max_column_id is not None else limit
        self.max_row_id = max_row_id if max_row_id is not None else limit
        self.cell_trim_length, self.strip_column_names = cell_trim_length, strip_column_names
        self.min_question_length, self.max_question_length = min_question_length, max_question_length

    # -- tokens -------------------------------------------------------------------------------------
    def _tokenize_texts(self, texts: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """text -> (ids, index of the piece each token's word starts at; -1 if none), all in one batch."""
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        out = {}
        for text, encoding in zip(texts, encodings):
            if text and is_empty_text(text):
                out[text] = (np.array([self.empty_token_id]), np.zeros(1, dtype=np.int64))
                continue
            begin, starts = -1, []
            for index, token in enumerate(encoding.tokens):
                begin = begin if token.startswith("##") else index
                starts.append(begin)
            out[text] = (np.array(encoding.ids, dtype=np.int64), np.array(starts, dtype=np.int64))
        return out

    def tokenize(self, text: str, text_pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        """The tokens of ``text``; an empty-looking text is the one ``[EMPTY]`` token."""
        if text and text_pair is None and not add_special_tokens and is_empty_text(text):
            return [self.empty_token]
        return super().tokenize(text, text_pair, add_special_tokens)

    # -- the call -----------------------------------------------------------------------------------
    def __call__(self, table: Any, queries: str | Sequence[str], answer_coordinates: Any = None,
                 answer_text: Any = None, *, padding: bool | str = False, truncation: bool | str = True,
                 max_length: int | None = None, pad_to_multiple_of: int | None = None,
                 return_tensors: str | None = None) -> BatchEncoding:
        """Encode ``queries`` (one string, or a list of questions about the same table) with ``table``.

        ``answer_coordinates`` ((row, column) cells, one list per question; ``answer_text`` is
        accepted for compatibility and unused) add ``labels``, ``numeric_values`` and
        ``numeric_values_scale``; in a batch with answers, each question's previous-answer token
        type marks the cells of the question before it (SQA). ``truncation`` True /
        "drop_rows_to_fit" drops rows from the bottom (and trims long cells) to fit ``max_length``
        (default ``model_max_length``); ``encoding.rows_dropped`` has the count per question.
        """
        header, rows = read_table(table)
        single = isinstance(queries, str)
        queries = [queries] if single else list(queries) if isinstance(queries, (list, tuple)) else None
        if not queries or not all(isinstance(q, str) for q in queries):
            raise DataError("queries must be a question (str) or a non-empty list of questions")
        if any(not q.strip() for q in queries):
            raise DataError("a question is empty; ask something about the table")
        if answer_coordinates is not None and single:
            answer_coordinates = [answer_coordinates]
        if answer_coordinates is not None and len(answer_coordinates) != len(queries):
            raise DataError(f"{len(queries)} question(s) but {len(answer_coordinates)} lists of answer coordinates; "
                            "give one list of (row, column) cells per question")
        truncate = _truncation(truncation)
        if padding not in (False, True, "longest", "max_length", "do_not_pad"):
            raise ConfigError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        limit = self.model_max_length if max_length is None else max_length
        parsed = _Table(self, header, rows)
        if parsed.num_columns >= self.max_column_id:
            raise DataError(f"the table has {parsed.num_columns} columns, the tokenizer allows fewer than "
                            f"max_column_id={self.max_column_id}; drop columns")
        question_ids = self._tokenize_texts(list(dict.fromkeys(queries)))
        examples, dropped = [], []
        for index, query in enumerate(queries):
            ids = question_ids[query][0].tolist()
            if (self.max_question_length is not None and len(ids) > self.max_question_length) or (
                    self.min_question_length is not None and len(ids) < self.min_question_length):
                warnings.warn(f"question {index} has {len(ids)} tokens, outside the tokenizer's min/max_question_length;"
                              " it is left out (an empty question)", stacklevel=2)
                query, ids = "", []
            keep_rows, word_limit = self._fit(parsed, len(ids), limit, truncate, max_length)
            dropped.append(parsed.num_rows - keep_rows)
            previous = answer_coordinates[index - 1] if answer_coordinates is not None and index > 0 else None
            examples.append(self._example(parsed, query, ids, keep_rows, word_limit, previous,
                                          None if answer_coordinates is None else answer_coordinates[index]))
        if any(dropped):
            warnings.warn(f"the table has {parsed.num_rows} rows; {max(dropped)} were dropped so that question and "
                          f"table fit max_length={limit} (raise max_length or ask about a smaller table to keep them)",
                          TableTruncatedWarning, stacklevel=2)
        mode = "max_length" if padding is True and single and (max_length or pad_to_multiple_of) else padding
        data = self._pad(examples, mode, max_length, pad_to_multiple_of)
        data = {key: _tensor(key, value, return_tensors) for key, value in data.items()}
        if single and return_tensors is None:
            data = {key: value[0] for key, value in data.items()}
        encoding = BatchEncoding(data, [])
        encoding.rows_dropped, encoding.num_table_rows = dropped, parsed.num_rows
        return encoding

    def _fit(self, table: _Table, question_length: int, limit: int, truncate: bool,
             max_length: int | None) -> tuple[int, int]:
        """(rows kept, word limit per cell): all of the table, or as many rows as fit ``limit``."""
        rows = table.num_rows
        if rows >= self.max_row_id:
            if not truncate:
                raise DataError(f"the table has {rows} rows, the tokenizer allows fewer than max_row_id="
                                f"{self.max_row_id}; pass truncation=True to drop rows")
            rows = self.max_row_id - 1
        if not truncate:
            if max_length is not None and question_length + 2 + table.cost(rows, table.max_cell_tokens) > max_length:
                raise DataError(f"question and table need {question_length + 2 + table.cost(rows, table.max_cell_tokens)}"
                                f" tokens, more than max_length={max_length}; pass truncation=True to drop rows")
            return rows, table.max_cell_tokens
        budget = limit - question_length - 2
        widest = table.max_cell_tokens
        if 0 <= self.cell_trim_length < widest:
            widest = self.cell_trim_length
        while rows >= 1:
            # the most leading words per cell that fit; a row goes only when not even one word does
            words = 0
            for words in range(widest + 1):
                if table.cost(rows, words + 1) > budget:
                    break
            if words >= widest or (words > 0 and self.cell_trim_length < 0):
                return rows, words or 1
            rows -= 1
        header = table.cost(0, 1)
        raise DataError(f"the question ({question_length} tokens) and the table header ({header} tokens at one word "
                        f"per column name) leave no room for one row within max_length={limit}; shorten the question "
                        "or the column names, drop columns, or raise max_length")

    def _example(self, table: _Table, query: str, ids: list[int], rows: int, word_limit: int, previous: Any,
                 answers: Any) -> dict[str, Any]:
        keep = (table.row <= rows) & (table.word_begin < word_limit)
        cell, n_question = table.cell[keep], len(ids) + 2
        relations = np.zeros(len(table.rank), dtype=np.int64)
        for (col, row), bits in numeric_relations(text_values(query), table.columns).items():
            relations[table.cell_index(row, col)] = bits
        types = np.zeros((n_question + len(cell), 7), dtype=np.int64)
        types[n_question:, 0] = 1
        types[n_question:, 1] = table.column[keep]
        types[n_question:, 2] = table.row[keep]
        if previous is not None:
            types[n_question:, 3] = self._answer_mask(table, cell, previous, "previous question's")
        types[n_question:, 4], types[n_question:, 5] = table.rank[cell], table.inv_rank[cell]
        types[n_question:, 6] = relations[cell]
        out = {"input_ids": np.concatenate([[self.cls_token_id], ids, [self.sep_token_id], table.ids[keep]]),
               "attention_mask": np.ones(n_question + len(cell), dtype=np.int64), "token_type_ids": types}
        if answers is not None:
            pad = np.zeros(n_question, dtype=np.int64)
            out["labels"] = np.concatenate([pad, self._answer_mask(table, cell, answers, "answer")])
            counts = np.bincount(cell, minlength=len(table.rank))
            counts[:table.num_columns] = 1  # header tokens keep scale 1
            out["numeric_values"] = np.concatenate([np.full(n_question, np.nan), table.number[cell]])
            out["numeric_values_scale"] = np.concatenate([pad + 1.0, np.maximum(counts[cell], 1).astype(np.float64)])
        return out

    @staticmethod
    def _answer_mask(table: _Table, cell: np.ndarray, coordinates: Any, what: str) -> np.ndarray:
        """1 for table tokens of the (row, column) cells; a cell missing from the sequence raises DataError."""
        wanted = []
        for pair in coordinates:
            try:
                row, column = (int(x) for x in pair)
            except (TypeError, ValueError):
                raise DataError(f"{what} coordinates must be (row, column) pairs of integers, got {pair!r}") from None
            if not (0 <= row < table.num_rows and 0 <= column < table.num_columns):
                raise DataError(f"{what} cell {(row, column)} is outside the table ({table.num_rows} rows, "
                                f"{table.num_columns} columns; rows and columns count from 0, header excluded)")
            wanted.append(table.cell_index(row, column))
        mask = np.isin(cell, wanted)
        missing = sorted(set(wanted) - set(cell[mask].tolist()))
        if missing:
            where = [divmod(i, table.num_columns) for i in missing]
            raise DataError(f"{what} cell(s) {[(r - 1, c) for r, c in where]} have no tokens in the sequence (an "
                            "empty cell, or a row dropped to fit max_length); raise max_length or fix the answer")
        return mask.astype(np.int64)

    def _pad(self, examples: list[dict[str, Any]], mode: Any, max_length: int | None,
             multiple: int | None) -> dict[str, list[Any]]:
        longest = max(len(e["input_ids"]) for e in examples)
        width = None
        if mode in (True, "longest"):
            width = longest
        elif mode == "max_length":
            width = max_length if max_length is not None else self.model_max_length
        if width is not None and multiple:
            width = -(-width // multiple) * multiple
        fills = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0, "labels": 0,
                 "numeric_values": np.nan, "numeric_values_scale": 1.0}
        data: dict[str, list[Any]] = {key: [] for key in examples[0]}
        for example in examples:
            for key, value in example.items():
                extra = 0 if width is None else max(width - len(value), 0)
                if extra:
                    block = np.full((extra, *value.shape[1:]), fills[key], dtype=value.dtype)
                    value = np.concatenate([value, block] if self.padding_side == "right" else [block, value])
                data[key].append(value)
        return data

    # -- predictions --------------------------------------------------------------------------------
    def convert_logits_to_predictions(self, data: Any, logits: Any, logits_agg: Any = None,
                                      cell_classification_threshold: float = 0.5, *,
                                      logits_aggregation: Any = None) -> tuple[Any, ...]:
        """(selected (row, column) cells per example,) or (cells, aggregation index per example).

        A cell is selected when the mean sigmoid probability of its tokens is above the threshold.
        """
        logits_agg = logits_aggregation if logits_agg is None else logits_agg
        logits = _numpy(logits).astype(np.float32)
        probabilities = 1 / (1 + np.exp(-np.maximum(logits, -88.7))) * _numpy(data["attention_mask"])
        types = _numpy(data["token_type_ids"])
        coordinates = []
        for example in range(logits.shape[0]):
            segment, column, row = (types[example, :, i] for i in (0, 1, 2))
            width, height = int(column.max()), int(row.max())
            cell = (segment == 1) & (column > 0) & (row > 0)
            if not cell.any():
                coordinates.append([])
                continue
            index = (row[cell] - 1) * width + column[cell] - 1
            sums = np.bincount(index, weights=probabilities[example][cell].astype(np.float64), minlength=width * height)
            counts = np.bincount(index, minlength=width * height)
            means = sums / np.maximum(counts, 1)
            chosen = np.flatnonzero((counts > 0) & (means > cell_classification_threshold))
            coordinates.append([(int(i // width), int(i % width)) for i in chosen])  # row-major: sorted
        if logits_agg is None:
            return (coordinates,)
        return coordinates, _numpy(logits_agg).argmax(axis=-1).tolist()

    # -- files --------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, **overrides: Any) -> "TapasTokenizer":
        """Read ``vocab.txt`` and ``tokenizer_config.json`` (and ``special_tokens_map.json``) as transformers writes them."""
        folder = Path(folder)
        if not (folder / "vocab.txt").is_file():
            raise missing_files_error(folder, "vocab.txt", "tokenizer.save_pretrained(folder)")
        settings = {**read_tokenizer_settings(folder), **overrides}
        vocab = read_vocab(folder / "vocab.txt")
        empty = settings.get("empty_token", "[EMPTY]")
        for key, entry in (settings.get("added_tokens_decoder") or {}).items():
            if isinstance(entry, dict) and entry.get("content") == empty and empty not in vocab:
                vocab[empty] = int(key)
        names = ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "max_input_chars_per_word",
                 "model_max_length", "padding_side", *_TAPAS_OPTIONS, *SPECIAL_TOKEN_NAMES)
        return cls(vocab, **{k: settings[k] for k in names if k in settings})

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``vocab.txt``, ``tokenizer_config.json``, ``special_tokens_map.json`` (and ``added_tokens.json``)."""
        vocab = self.tokenizer.get_vocab(with_added_tokens=False)
        in_file = sorted((i, t) for t, i in vocab.items() if i < self.vocab_file_size)
        added = {} if self.empty_token_id < self.vocab_file_size else {self.empty_token: self.empty_token_id}
        config = {"tokenizer_class": self.hf_class, "do_lower_case": self.do_lower_case, "do_basic_tokenize": True,
                  "strip_accents": self.strip_accents, "tokenize_chinese_chars": self.tokenize_chinese_chars,
                  **self.special_tokens, "empty_token": self.empty_token, "extra_special_tokens": [self.empty_token],
                  "cell_trim_length": self.cell_trim_length, "max_column_id": self.max_column_id,
                  "max_row_id": self.max_row_id, "strip_column_names": self.strip_column_names,
                  "update_answer_coordinates": False, "min_question_length": self.min_question_length,
                  "max_question_length": self.max_question_length, "model_max_length": self.model_max_length,
                  "padding_side": self.padding_side, "clean_up_tokenization_spaces": True,
                  "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                                    "single_word": False, "special": True} for t, i in added.items()}}
        files: dict[str, Any] = {"tokenizer_config.json": config,
                                 "special_tokens_map.json": {**self.special_tokens,
                                                             "additional_special_tokens": [self.empty_token]}}
        if added:
            files["added_tokens.json"] = added
        text = "".join(token + "\n" for _, token in in_file)
        return write_json_files(folder, files, writers={"vocab.txt": lambda p: p.write_text(text, encoding="utf-8")})


def _truncation(value: Any) -> bool:
    if value in (True, "drop_rows_to_fit"):
        return True
    if value in (False, None, "do_not_truncate"):
        return False
    raise ConfigError(f"truncation must be True/'drop_rows_to_fit' or False/'do_not_truncate', got {value!r}")


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _tensor(key: str, rows: list[np.ndarray], return_tensors: str | None) -> Any:
    """Rows as Python lists, or one int64 (float32 for numeric values) array / tensor."""
    if return_tensors is None:
        return [row.tolist() for row in rows]
    if return_tensors not in ("pt", "np"):
        raise ConfigError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
    if len({len(row) for row in rows}) > 1:
        raise DataError("the questions' sequences have different lengths; pass padding=True to make a tensor of them")
    array = np.stack(rows).astype(np.float32 if key.startswith("numeric") else np.int64)
    return torch.from_numpy(array) if return_tensors == "pt" else array


register_processor("tokenizer", TapasTokenizer, names=["TapasTokenizer"], model_types=["tapas"])
