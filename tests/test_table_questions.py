"""Tables and templated table questions: every gold answer is re-derived from the question text with
pandas, the splits hold out tables and phrasings, and the same seed gives the same data."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from polyformer.data.table_questions import (
    AGGREGATIONS, TEMPLATES, TEST_PHRASINGS, TableQuestion, denotation, denotation_match, generate_questions,
    question_splits,
)
from polyformer.data.tables import NamedTable, book_table, format_number, synthetic_tables, vega_available, vega_tables
from polyformer.errors import ConfigError, DataError

TEMPLATE = {t.id: t for t in TEMPLATES}


@pytest.fixture(scope="module")
def tables() -> list[NamedTable]:
    return synthetic_tables(per_kind=4, seed=3) + vega_tables(max_rows=8, per_source=1, seed=3)


@pytest.fixture(scope="module")
def questions(tables) -> list[TableQuestion]:
    return [q for t in tables for q in generate_questions(t, 24, seed=5)]


def _column(frame: pd.DataFrame, words: str) -> str:
    """The column a question names (its words are the column name lower-cased, '_' as spaces)."""
    found = [c for c in frame.columns if c.replace("_", " ").lower() == words]
    assert len(found) == 1, (words, list(frame.columns))
    return found[0]


def _slots(question: TableQuestion) -> dict[str, str]:
    """The slot values, read back from the question text with the phrasing turned into a regex."""
    # column slots can only be a column's words (longest first: "number of pages" before "number")
    names = sorted((re.escape(c.replace("_", " ").lower()) for c in question.table.columns), key=len, reverse=True)
    columns = "|".join(names)
    seen: set[str] = set()

    def slot(match: re.Match) -> str:  # a slot used twice in a phrasing is a back-reference the second time
        name = match.group(1)
        if name in seen:
            return f"(?P={name})"
        seen.add(name)
        return f"(?P<{name}>{columns})" if name in ("col", "ccol", "cat") else f"(?P<{name}>.+?)"

    pattern = re.sub(r"\\\{(\w+)\\\}", slot, re.escape(TEMPLATE[question.template].phrasings[question.phrasing]))
    match = re.fullmatch(pattern, question.question)
    assert match, (pattern, question.question)
    return match.groupdict()


def _naive_rows(question: TableQuestion, slots: dict[str, str]) -> list[int]:
    """The rows a question's condition selects, computed with pandas from the question's own words."""
    frame = question.table
    if "ccol" in slots:
        values = pd.to_numeric(frame[_column(frame, slots["ccol"])])
        x = float(slots["x"])
        mask = values > x if question.template.endswith("_gt") else values < x
    elif "cv" in slots:  # some phrasings name only the category's value ("the home products")
        column = _column(frame, slots["cat"]) if "cat" in slots else next(
            c for c in frame.columns[1:] if (frame[c] == slots["cv"]).any())
        mask = frame[column] == slots["cv"]
    else:
        mask = pd.Series(True, index=frame.index)
    return [int(i) for i in np.flatnonzero(mask.to_numpy())]


def test_gold_answers_match_pandas_over_the_question_text(questions):
    assert len(questions) > 300
    assert {q.aggregation for q in questions} == set(AGGREGATIONS)
    assert {q.template for q in questions} == set(TEMPLATE)
    for q in questions:
        slots = _slots(q)
        frame = q.table
        rows = sorted(r for r, _ in q.answer_coordinates)
        columns = {c for _, c in q.answer_coordinates}
        assert len(columns) == 1, q.question  # one column per answer: TAPAS's select_one_column
        column = frame.columns[columns.pop()]
        key = frame.columns[0]
        if q.template == "lookup":
            row = int(np.flatnonzero((frame[key] == slots["v"]).to_numpy())[0])
            assert q.answer_coordinates == [(row, frame.columns.get_loc(_column(frame, slots["col"])))]
            assert q.answer == [frame.loc[row, _column(frame, slots["col"])]]
            continue
        if q.template in ("argmax", "argmin"):
            values = pd.to_numeric(frame[_column(frame, slots["col"])])
            best = values.idxmax() if q.template == "argmax" else values.idxmin()
            assert (values == values[best]).sum() == 1
            assert q.answer == [frame.loc[best, key]] and column == key
            continue
        assert rows == _naive_rows(q, slots), q.question
        cells = frame.iloc[rows][column]
        if q.aggregation == "NONE":
            assert column == key and sorted(q.answer) == sorted(cells.tolist())
        elif q.aggregation == "COUNT":
            assert column == key and q.answer == float(len(cells))
        else:
            assert column == _column(frame, slots["col"])
            values = pd.to_numeric(cells)
            expected = values.sum() if q.aggregation == "SUM" else values.mean()
            assert isinstance(q.answer, float) and math.isclose(q.answer, float(expected), rel_tol=1e-12, abs_tol=1e-9)
        assert denotation(frame, q.answer_coordinates, q.aggregation) == q.answer
        assert q.answer_text == frame.iloc[rows][column].tolist()


def test_conditions_never_select_all_or_no_rows(questions):
    for q in questions:
        if q.template.endswith(("_gt", "_lt", "_eq")):
            assert 0 < len(q.answer_coordinates) < len(q.table), q.question


def test_splits_hold_out_tables_and_phrasings(tables):
    splits = question_splits(tables, train_per_table=10, test_per_table=6, test_fraction=0.3, seed=1)
    train_names = {q.table_name for q in splits.train}
    test_names = {q.table_name for q in splits.test}
    assert train_names and test_names and not train_names & test_names
    assert {t.name for t in splits.test_tables} == test_names
    train_phrasings = {(q.template, q.phrasing) for q in splits.train}
    test_phrasings = {(q.template, q.phrasing) for q in splits.test}
    assert not train_phrasings & test_phrasings
    for q in splits.test:
        assert q.phrasing >= len(TEMPLATE[q.template].phrasings) - TEST_PHRASINGS
    # no test wording (the phrasing's fixed text) occurs among training questions' wordings
    train_patterns = {TEMPLATE[t].phrasings[p] for t, p in train_phrasings}
    assert not train_patterns & {TEMPLATE[t].phrasings[p] for t, p in test_phrasings}


def test_split_by_source_keeps_each_source_on_one_side(tables):
    splits = question_splits(tables, train_per_table=4, test_per_table=4, by="source", seed=2)
    train_sources = {t.source for t in splits.train_tables}
    test_sources = {t.source for t in splits.test_tables}
    assert train_sources and test_sources and not train_sources & test_sources


def test_seeds_reproduce(tables):
    def key(split):
        return [(q.table_name, q.question, q.answer_coordinates, q.answer) for q in split.train + split.test]

    a, b = (question_splits(tables, 6, 4, seed=7) for _ in range(2))
    assert key(a) == key(b)
    assert key(question_splits(tables, 6, 4, seed=8)) != key(a)
    one = synthetic_tables(per_kind=2, seed=11)
    two = synthetic_tables(per_kind=2, seed=11)
    assert all(x.frame.equals(y.frame) for x, y in zip(one, two))
    assert not synthetic_tables(per_kind=2, seed=12)[0].frame.equals(one[0].frame)


def test_tables_are_strings_with_unique_keys(tables):
    for table in tables:
        assert all(isinstance(v, str) for v in table.frame.to_numpy().ravel()), table.name
        assert table.frame.iloc[:, 0].is_unique
        assert table.numeric_columns
        if table.category is not None:
            assert table.category in table.frame.columns


@pytest.mark.skipif(not vega_available(), reason="vega_datasets is not installed (pip install --no-deps vega_datasets)")
def test_vega_tables_come_from_the_wheel_only():
    from vega_datasets import local_data

    tables = vega_tables(max_rows=6, per_source=2, seed=0)
    sources = {t.source.removeprefix("vega-") for t in tables}
    assert len(sources) >= 10 and sources <= set(local_data.list_datasets())
    assert all(len(t.frame) <= 6 for t in tables)
    cars = vega_tables(max_rows=5, per_source=1, datasets=("cars",))[0]
    assert list(cars.frame.columns) == ["Name", "Horsepower", "Miles_per_Gallon", "Cylinders", "Weight_in_lbs", "Origin"]
    with pytest.raises(ConfigError, match="unknown vega tables"):
        vega_tables(datasets=("airports-from-the-web",))


def test_book_table_gives_the_documented_answers():
    book = book_table()
    assert list(book.columns) == ["chapter", "name", "start_page", "end_page", "number_of_pages"]
    assert all(isinstance(v, str) for v in book.to_numpy().ravel())
    assert book.loc[book.chapter == "4", "name"].tolist() == ["Summarization"]
    assert book.number_of_pages.tolist() == ["10", "36", "24", "46", "19", "3"]
    assert book.number_of_pages.astype(int).sum() == 138
    assert book.loc[book.name == "Question Answering", "start_page"].tolist() == ["74"]
    assert book.loc[book.number_of_pages.astype(int) > 20, "chapter"].tolist() == ["1", "2", "3"]


def test_denotation_match():
    assert denotation_match(138.0, 138.0) and denotation_match(138.00001, 138.0)
    assert not denotation_match(137.0, 138.0) and not denotation_match(math.nan, 1.0)
    assert denotation_match(["b", "a"], ["a", "b"]) and denotation_match([" a", "a"], ["a"])
    assert not denotation_match(["a"], ["a", "b"])
    assert denotation_match(["3"], 3.0) and denotation_match(3, ["3.0"]) and not denotation_match(["3", "4"], 3.0)
    assert not denotation_match(["x"], 3.0)
    with pytest.raises(DataError, match="lists of cell strings"):
        denotation_match("a", ["a"])
    frame = pd.DataFrame({"k": ["a", "b", "c"], "v": ["1", "x", "2.5"]})
    assert denotation(frame, [(0, 1), (1, 1), (2, 1)], "SUM") == 3.5  # text cells are skipped
    assert denotation(frame, [(0, 1), (2, 1)], "AVERAGE") == 1.75
    assert denotation(frame, [(0, 0), (1, 0)], "COUNT") == 2.0
    assert math.isnan(denotation(frame, [(1, 1)], "AVERAGE"))


def test_format_number():
    assert [format_number(v) for v in (12.0, 3.14159, -0.04, 1e6)] == ["12", "3.1", "0", "1000000"]
    assert [format_number(v, 2) for v in (2.25, 1.50, 7)] == ["2.25", "1.5", "7"]


def test_bad_input_is_named():
    with pytest.raises(DataError, match="unique values"):
        NamedTable("t", pd.DataFrame({"k": ["a", "a"], "v": ["1", "2"]}), "s")
    with pytest.raises(DataError, match="at least one row"):
        NamedTable("t", pd.DataFrame({"k": [], "v": []}), "s")
    with pytest.raises(ConfigError, match="phrasings"):
        generate_questions(synthetic_tables(per_kind=1)[0], 3, phrasings="dev")
    with pytest.raises(ConfigError, match="unknown aggregation"):
        denotation(book_table(), [(0, 0)], "MAX")
    with pytest.raises(ConfigError, match="kinds"):
        synthetic_tables(kinds=("weather",))
    with pytest.raises(DataError, match="two tables"):
        question_splits([])
    with pytest.raises(DataError, match="at least two"):
        question_splits(synthetic_tables(per_kind=1, kinds=("cities",)))
