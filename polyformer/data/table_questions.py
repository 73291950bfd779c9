"""Templated questions about tables, with the cells that answer them and how to combine those cells.

Each :class:`TableQuestion` carries what strong supervision needs — the ``answer_coordinates``
(row, column) of the cells to select and the ``aggregation`` to apply to them (``NONE``, ``SUM``,
``AVERAGE``, ``COUNT``) — and the gold *denotation* ``answer``: the number the aggregation gives,
or the list of selected cell strings when there is none.

Templates (:data:`TEMPLATES`) cover lookups ("What is the horsepower of ford torino?"), lists
under a condition ("Which teams have more than 12 wins?"), SUM / AVERAGE / COUNT over a column with
and without a condition (greater than, less than, equal to a category), and superlatives ("Which
city has the largest population?"). Each template has several *phrasings*; the last
:data:`TEST_PHRASINGS` of each are kept for testing only, so :func:`question_splits` can test on
tables *and* wordings the model never saw in training.

:func:`denotation_match` compares a predicted denotation with the gold one (numbers within a
tolerance, cell lists as sets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from polyformer.data.tables import NamedTable, format_number
from polyformer.errors import ConfigError, DataError

__all__ = ["AGGREGATIONS", "QuestionSplits", "TEMPLATES", "TEST_PHRASINGS", "TableQuestion", "Template", "denotation",
           "denotation_match", "generate_questions", "question_splits"]

AGGREGATIONS = ("NONE", "SUM", "AVERAGE", "COUNT")  # the order of TAPAS's aggregation head
TEST_PHRASINGS = 1  # phrasings per template kept for testing only (the last ones listed)


@dataclass
class TableQuestion:
    """One question about ``table`` (a DataFrame of strings) with its strong supervision and answer."""

    table: pd.DataFrame
    question: str
    answer_coordinates: list[tuple[int, int]]
    aggregation: str
    answer: float | list[str]
    template: str
    table_name: str
    phrasing: int = 0

    @property
    def aggregation_label(self) -> int:
        """The aggregation as the index TAPAS's aggregation head uses."""
        return AGGREGATIONS.index(self.aggregation)

    @property
    def answer_text(self) -> list[str]:
        """The selected cells' strings (what a tokenizer's ``answer_text`` takes)."""
        return [str(self.table.iat[r, c]) for r, c in self.answer_coordinates]

    @property
    def float_answer(self) -> float:
        """The answer as one number (weak supervision's target); NaN when it is a list of cells that is
        not a single number."""
        if isinstance(self.answer, float):
            return self.answer
        return _number(self.answer[0]) if len(self.answer) == 1 else math.nan


def _number(text: Any) -> float:
    try:
        return float(str(text).replace(",", ""))
    except ValueError:
        return math.nan


def denotation(table: pd.DataFrame, coordinates: Sequence[tuple[int, int]], aggregation: str) -> float | list[str]:
    """What selecting ``coordinates`` of ``table`` and applying ``aggregation`` answers: the cells'
    strings for ``NONE``, else a float (COUNT counts the cells; SUM and AVERAGE skip cells that are not
    numbers, and AVERAGE of no number is NaN)."""
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"unknown aggregation {aggregation!r}; choose from {', '.join(AGGREGATIONS)}")
    cells = [str(table.iat[r, c]) for r, c in coordinates]
    if aggregation == "NONE":
        return cells
    if aggregation == "COUNT":
        return float(len(cells))
    values = [v for v in (_number(c) for c in cells) if not math.isnan(v)]
    if aggregation == "SUM":
        return float(sum(values))
    return float(sum(values) / len(values)) if values else math.nan


def denotation_match(predicted: Any, gold: float | Sequence[str], rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    """Whether a predicted denotation equals the gold one.

    Numbers match within ``rel_tol`` / ``abs_tol``; cell lists match as sets (order and repeats do
    not matter, surrounding spaces are ignored). As in table-QA evaluation, a number and a list of one
    cell that reads as that number also match (a lookup that answers "3" for "how many ...?").
    """

    def as_number(value: Any) -> float | None:
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, (list, tuple)) and len(value) == 1:
            number = _number(value[0])
            return None if math.isnan(number) else number
        return None

    if isinstance(gold, (int, float, np.number)) or isinstance(predicted, (int, float, np.number)):
        p, g = as_number(predicted), as_number(gold)
        if p is None or g is None or math.isnan(p) or math.isnan(g):
            return False
        return math.isclose(p, g, rel_tol=rel_tol, abs_tol=abs_tol)
    if isinstance(predicted, str) or isinstance(gold, str):
        raise DataError("denotations are numbers or lists of cell strings; wrap a single cell in a list")
    return {str(v).strip() for v in predicted} == {str(v).strip() for v in gold}


# ------------------------------------------------------------------------------------------------
# Templates
# ------------------------------------------------------------------------------------------------
def _words(column: str) -> str:
    """A column name as words in a question: ``Miles_per_Gallon`` -> ``miles per gallon``."""
    return column.replace("_", " ").strip().lower()


def _plural(word: str) -> str:
    if word.endswith(("s", "x", "ch", "sh", "ia")):
        return word if word.endswith("ia") else word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


@dataclass
class _Draw:
    """What a template drew from one table: the cells, the slot values of its phrasings."""

    coordinates: list[tuple[int, int]]
    slots: dict[str, str]


Builder = Callable[[NamedTable, np.random.Generator], "_Draw | None"]


@dataclass(frozen=True)
class Template:
    """A question type: its ``aggregation``, the ``phrasings`` (``str.format`` patterns over the slots
    ``key``/``keys`` (the key column, singular and plural), ``col``, ``v`` (a key value), ``ccol``,
    ``x`` (a condition's column and threshold), ``cat``, ``cv`` (a category column and value)), and
    ``draw``, which picks the cells from a table (None when the table cannot carry the question)."""

    id: str
    aggregation: str
    phrasings: tuple[str, ...]
    draw: Builder = field(compare=False)


def _values(table: NamedTable, column: str) -> np.ndarray:
    return np.array([float(v) for v in table.frame[column]])


def _pick_column(table: NamedTable, rng: np.random.Generator) -> str | None:
    columns = table.numeric_columns
    return None if not columns else columns[int(rng.integers(len(columns)))]


def _condition(table: NamedTable, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, dict[str, str]] | None:
    """Rows that satisfy a drawn condition (a boolean mask, never all or none) and its slot values."""
    if kind == "eq":
        if table.category is None:
            return None
        cells = table.frame[table.category].to_numpy()
        value = cells[int(rng.integers(len(cells)))]
        mask = cells == value
        return (mask, {"cat": _words(table.category), "cv": str(value)}) if 0 < mask.sum() < len(mask) else None
    column = _pick_column(table, rng)
    if column is None:
        return None
    values = _values(table, column)
    levels = np.unique(values)
    if len(levels) < 2:
        return None
    # a threshold that is itself a cell value, so that "greater than" and "less than" are unambiguous
    threshold = levels[int(rng.integers(0, len(levels) - 1))] if kind == "gt" else levels[int(rng.integers(1, len(levels)))]
    mask = values > threshold if kind == "gt" else values < threshold
    return mask, {"ccol": _words(column), "x": format_number(threshold, 2)}


def _base_slots(table: NamedTable) -> dict[str, str]:
    key = _words(table.key)
    return {"key": key, "keys": _plural(key)}


def _lookup(table: NamedTable, rng: np.random.Generator) -> _Draw | None:
    columns = list(table.frame.columns[1:])
    column = columns[int(rng.integers(len(columns)))]
    row = int(rng.integers(len(table.frame)))
    c = table.frame.columns.get_loc(column)
    return _Draw([(row, c)], {**_base_slots(table), "col": _words(column), "v": str(table.frame.iat[row, 0])})


def _select(kind: str) -> Builder:
    def draw(table: NamedTable, rng: np.random.Generator) -> _Draw | None:
        found = _condition(table, rng, kind)
        if found is None:
            return None
        mask, slots = found
        return _Draw([(int(r), 0) for r in np.flatnonzero(mask)], {**_base_slots(table), **slots})

    return draw


def _aggregate(kind: str | None, count: bool = False) -> Builder:
    """SUM / AVERAGE of a numeric column (or COUNT of the key cells) over the rows of a condition."""

    def draw(table: NamedTable, rng: np.random.Generator) -> _Draw | None:
        column = table.key if count else _pick_column(table, rng)
        if column is None:
            return None
        slots = {**_base_slots(table), "col": _words(column)}
        mask = np.ones(len(table.frame), dtype=bool)
        if kind is not None:
            found = _condition(table, rng, kind)
            if found is None:
                return None
            mask, more = found
            slots.update(more)
        c = table.frame.columns.get_loc(column)
        return _Draw([(int(r), c) for r in np.flatnonzero(mask)], slots)

    return draw


def _extreme(largest: bool) -> Builder:
    def draw(table: NamedTable, rng: np.random.Generator) -> _Draw | None:
        column = _pick_column(table, rng)
        if column is None:
            return None
        values = _values(table, column)
        best = values.max() if largest else values.min()
        if (values == best).sum() != 1:  # ties have no single answer
            return None
        return _Draw([(int(np.argmax(values == best)), 0)], {**_base_slots(table), "col": _words(column)})

    return draw


TEMPLATES: tuple[Template, ...] = (
    Template("lookup", "NONE", ("What is the {col} of {v}?", "What {col} does {v} have?", "Tell me the {col} for {v}.",
                                "For {v}, what is the {col}?", "Which {col} is listed for {v}?"), _lookup),
    Template("select_gt", "NONE", ("Which {keys} have a {ccol} greater than {x}?", "List the {keys} whose {ccol} is above {x}.",
                                   "Which {keys} have more than {x} {ccol}?", "Name every {key} with {ccol} over {x}."),
             _select("gt")),
    Template("select_lt", "NONE", ("Which {keys} have a {ccol} less than {x}?", "List the {keys} whose {ccol} is below {x}.",
                                   "Which {keys} have fewer than {x} {ccol}?", "Name every {key} with {ccol} under {x}."),
             _select("lt")),
    Template("select_eq", "NONE", ("Which {keys} have {cat} {cv}?", "List the {keys} whose {cat} is {cv}.",
                                   "Which {keys} are in {cat} {cv}?", "Name every {key} where {cat} is {cv}."),
             _select("eq")),
    Template("argmax", "NONE", ("Which {key} has the largest {col}?", "Which {key} has the highest {col}?",
                                "What {key} has the most {col}?", "Name the {key} with the maximum {col}."), _extreme(True)),
    Template("argmin", "NONE", ("Which {key} has the smallest {col}?", "Which {key} has the lowest {col}?",
                                "What {key} has the least {col}?", "Name the {key} with the minimum {col}."), _extreme(False)),
    Template("sum", "SUM", ("What is the total {col}?", "What is the sum of the {col}?", "How much {col} is there in total?",
                            "Add up all the {col}."), _aggregate(None)),
    Template("sum_gt", "SUM", ("What is the total {col} of {keys} with {ccol} greater than {x}?",
                               "Sum the {col} where {ccol} is above {x}.",
                               "How much {col} in total for {keys} whose {ccol} is more than {x}?",
                               "Add up the {col} of every {key} with {ccol} over {x}."), _aggregate("gt")),
    Template("sum_lt", "SUM", ("What is the total {col} of {keys} with {ccol} less than {x}?",
                               "Sum the {col} where {ccol} is below {x}.",
                               "How much {col} in total for {keys} whose {ccol} is less than {x}?",
                               "Add up the {col} of every {key} with {ccol} under {x}."), _aggregate("lt")),
    Template("sum_eq", "SUM", ("What is the total {col} where {cat} is {cv}?", "Sum the {col} of the {cv} {keys}.",
                               "How much {col} in total for {cat} {cv}?", "Add up the {col} of every {key} in {cat} {cv}."),
             _aggregate("eq")),
    Template("average", "AVERAGE", ("What is the average {col}?", "What is the mean {col}?", "On average, how much {col}?",
                                    "Give the typical {col}, averaged over all {keys}."), _aggregate(None)),
    Template("average_gt", "AVERAGE", ("What is the average {col} of {keys} with {ccol} greater than {x}?",
                                       "Mean {col} where {ccol} is above {x}?",
                                       "On average, how much {col} do {keys} with more than {x} {ccol} have?",
                                       "Average the {col} over every {key} with {ccol} over {x}."), _aggregate("gt")),
    Template("average_lt", "AVERAGE", ("What is the average {col} of {keys} with {ccol} less than {x}?",
                                       "Mean {col} where {ccol} is below {x}?",
                                       "On average, how much {col} do {keys} with less than {x} {ccol} have?",
                                       "Average the {col} over every {key} with {ccol} under {x}."), _aggregate("lt")),
    Template("average_eq", "AVERAGE", ("What is the average {col} where {cat} is {cv}?", "Mean {col} of the {cv} {keys}?",
                                       "On average, how much {col} for {cat} {cv}?",
                                       "Average the {col} over every {key} in {cat} {cv}."), _aggregate("eq")),
    Template("count", "COUNT", ("How many {keys} are there?", "What is the number of {keys}?", "Count the {keys}.",
                                "How many {keys} does the table list?"), _aggregate(None, count=True)),
    Template("count_gt", "COUNT", ("How many {keys} have a {ccol} greater than {x}?",
                                   "What is the number of {keys} with {ccol} above {x}?",
                                   "Count the {keys} whose {ccol} is more than {x}.",
                                   "How many {keys} have more than {x} {ccol}?"), _aggregate("gt", count=True)),
    Template("count_lt", "COUNT", ("How many {keys} have a {ccol} less than {x}?",
                                   "What is the number of {keys} with {ccol} below {x}?",
                                   "Count the {keys} whose {ccol} is less than {x}.",
                                   "How many {keys} have fewer than {x} {ccol}?"), _aggregate("lt", count=True)),
    Template("count_eq", "COUNT", ("How many {keys} have {cat} {cv}?", "What is the number of {keys} where {cat} is {cv}?",
                                   "Count the {cv} {keys}.", "How many {keys} are in {cat} {cv}?"),
             _aggregate("eq", count=True)),
)


def _phrasing_indices(template: Template, which: str) -> list[int]:
    n = len(template.phrasings)
    if which == "train":
        return list(range(n - TEST_PHRASINGS))
    if which == "test":
        return list(range(n - TEST_PHRASINGS, n))
    if which == "all":
        return list(range(n))
    raise ConfigError(f"phrasings must be 'train', 'test' or 'all', got {which!r}")


def generate_questions(table: NamedTable, count: int, seed: int = 0, phrasings: str = "all",
                       templates: Sequence[Template] = TEMPLATES, tries: int = 20) -> list[TableQuestion]:
    """Up to ``count`` distinct questions about ``table``: each draws an aggregation type uniformly
    (so NONE, SUM, AVERAGE and COUNT are balanced), then a template of that type the table can carry,
    then one of its ``phrasings`` (``"train"``, ``"test"`` or ``"all"``). Reproducible from ``seed``."""
    rng = np.random.default_rng([seed, *table.name.encode()])
    by_type = {a: [t for t in templates if t.aggregation == a] for a in AGGREGATIONS}
    by_type = {a: ts for a, ts in by_type.items() if ts}
    if not by_type:
        raise ConfigError("generate_questions needs at least one template")
    out: list[TableQuestion] = []
    seen: set[str] = set()
    for _ in range(count * tries):
        if len(out) == count:
            break
        kinds = list(by_type)
        options = by_type[kinds[int(rng.integers(len(kinds)))]]
        template = options[int(rng.integers(len(options)))]
        drawn = template.draw(table, rng)
        if drawn is None or not drawn.coordinates:
            continue
        indices = _phrasing_indices(template, phrasings)
        phrasing = indices[int(rng.integers(len(indices)))]
        question = template.phrasings[phrasing].format(**drawn.slots)
        if question in seen:
            continue
        seen.add(question)
        frame = table.frame
        out.append(TableQuestion(frame, question, drawn.coordinates, template.aggregation,
                                 denotation(frame, drawn.coordinates, template.aggregation), template.id, table.name,
                                 phrasing))
    return out


@dataclass
class QuestionSplits:
    """Training questions (training tables, training phrasings) and test questions (held-out tables,
    held-out phrasings), with the tables on each side."""

    train: list[TableQuestion]
    test: list[TableQuestion]
    train_tables: list[NamedTable]
    test_tables: list[NamedTable]


def question_splits(tables: Sequence[NamedTable], train_per_table: int = 20, test_per_table: int = 8,
                    test_fraction: float = 0.25, by: str = "table", seed: int = 0,
                    templates: Sequence[Template] = TEMPLATES) -> QuestionSplits:
    """Split ``tables`` into training and test tables (``by="table"``: each table on its own;
    ``by="source"``: every table cut from one source on the same side) with ``test_fraction`` of them
    held out, and generate questions: training phrasings on training tables, test phrasings on test
    tables. Reproducible from ``seed``."""
    if not tables:
        raise DataError("question_splits needs at least two tables; got none")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if by not in ("table", "source"):
        raise ConfigError(f"split by 'table' or 'source', got {by!r}")
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise DataError("table names must be unique to split by table")
    units = sorted({t.name if by == "table" else t.source for t in tables})
    if len(units) < 2:
        raise DataError(f"need at least two {by}s to hold some out, got {len(units)}")
    order = np.random.default_rng(seed).permutation(len(units))
    held = {units[i] for i in order[: max(1, int(round(test_fraction * len(units))))]}
    test_tables = [t for t in tables if (t.name if by == "table" else t.source) in held]
    train_tables = [t for t in tables if (t.name if by == "table" else t.source) not in held]
    train = [q for t in train_tables for q in generate_questions(t, train_per_table, seed, "train", templates)]
    test = [q for t in test_tables for q in generate_questions(t, test_per_table, seed + 1, "test", templates)]
    return QuestionSplits(train, test, train_tables, test_tables)
