"""Number and date parsing, column consolidation, ranks and numeric relations against the helper
functions of transformers' TAPAS tokenizer (the original TAPAS rules), text by text."""

import random

import pytest

from polyformer.processors import table_values as tv

transformers = pytest.importorskip("transformers")
from transformers.models.tapas import tokenization_tapas as hf  # noqa: E402

TEXTS = [
    "1,234.5", "-3", "+7 apples", "a -5 b", ".5", "5.", "21st", "2nd place", "first", "twelfth", "seven", "zero",
    "March 2007", "march 5", "5 march", "May", "Sept 12", "2010-05-04", "05-04-2010", "04.05.2010", "1990s", "2016",
    "2017", "1699", "1700", "Monday, March 5", "March 5, 2001", "5 March 2001", "Mar 2001", "2001-03",
    "1e5", "infinity", "nan", "n/a", "", "  ", "text only", "1,00", "1,000,000", "12:30", "$4.50", "50%",
    "between 3 and 4", "from 1990 to 2000", "chapter 4 has 32 pages", "١٢", "3rd of May 1990", "the 1st of june",
]


def _hf_values(text):
    return [(v.float_value, None if v.date is None else (v.date.year, v.date.month, v.date.day))
            for v in hf._get_numeric_values(hf.normalize_for_match(text))]


def _ours(values):
    return [(v.number, None if v.date is None else tuple(None if x is None else int(x) for x in v.date))
            for v in values]


@pytest.mark.parametrize("text", TEXTS)
def test_values_in_text(text):
    assert _ours(tv.text_values(text)) == _hf_values(text)
    spans = hf.parse_text(hf.normalize_for_match(text))
    assert [(b, e) for b, e, _ in tv.text_spans(tv.normalize_for_match(text))] == [
        (s.begin_index, s.end_index) for s in spans]


@pytest.mark.parametrize("text", TEXTS + ["a", "!!", "?", "--", "N/A", "NaN", "_", "x_y"])
def test_empty_text(text):
    assert tv.is_empty_text(text) == (hf.format_text(text) == hf.EMPTY_TEXT)


def _to_hf(value):
    if value.number is not None:
        return hf.NumericValue(float_value=value.number)
    y, m, d = (None if x is None else int(x) for x in value.date)
    return hf.NumericValue(date=hf.Date(year=y, month=m, day=d))


def _random_column(rng):
    pool = ["7", "7", "3", "10", "1999", "2001", "March 2007", "May 5", "n/a", "", "x", "1st", "2003-04-05",
            "seven", "1,234.5"]
    return [rng.choice(pool) for _ in range(rng.randint(1, 9))]


def test_columns_ranks_and_relations_random():
    """consolidate / column_ranks / numeric_relations against transformers' helpers on random columns."""
    rng = random.Random(0)
    seen = {"ranked": 0, "related": 0, "dates": 0}
    for _ in range(200):
        column = _random_column(rng)
        ours = tv.consolidate([tv.text_values(t) for t in column])
        theirs = hf._consolidate_numeric_values(
            {i: list(hf._get_numeric_values(hf.normalize_for_match(t))) for i, t in enumerate(column)},
            min_consolidation_fraction=0.7, debug_info=None)
        assert {r: _to_hf(v) for r, v in ours.items()} == theirs
        # ranks: distinct sort keys in order, 1-based, equal values share a rank (a naive loop)
        if theirs:
            try:
                key = hf.get_numeric_sort_key_fn(list(theirs.values()))
            except ValueError:
                key = None
            expected = {}
            if key is not None:
                distinct = sorted({key(v) for v in theirs.values()})
                expected = {r: (distinct.index(key(v)) + 1, len(distinct) - distinct.index(key(v)))
                            for r, v in theirs.items()}
            assert tv.column_ranks(ours) == expected
            seen["ranked"] += bool(expected)
            seen["dates"] += any(v.date is not None for v in ours.values())
        question = rng.choice(["more than 5", "after 2000", "in may", "less than seven", "no numbers", "march 2007"])
        relations = tv.numeric_relations(tv.text_values(question), [ours])
        expected = {}
        for value in hf.add_numeric_values_to_question(question).numeric_spans:
            for v in value.values:
                try:
                    key = hf.get_numeric_sort_key_fn([*theirs.values(), v]) if theirs else None
                except ValueError:
                    key = None
                for row, cell in (theirs.items() if key else []):
                    bit = 2 ** (hf.get_numeric_relation(v, cell, key).value - hf.Relation.EQ.value)
                    expected[0, row] = expected.get((0, row), 0) | bit
        assert relations == expected
        seen["related"] += bool(expected)
    assert min(seen.values()) >= 10, seen  # the comparisons above were not all vacuous


def test_sort_key_mixed_and_partial_dates():
    number, year = tv.Value(number=3.0), tv.Value(date=(2001.0, None, None))
    assert tv.sort_key([number, year]) is None  # numbers and dates do not compare
    month_day, year_only = tv.Value(date=(None, 5.0, 1.0)), tv.Value(date=(1999.0, None, None))
    assert tv.sort_key([month_day, year_only]) is None  # no field in common
    key = tv.sort_key([tv.Value(date=(2001.0, 3.0, None)), year_only])
    assert key(year_only) == (1999.0,)
    assert tv.column_ranks({0: number, 1: tv.Value(number=1.0), 2: number}) == {0: (2, 1), 1: (1, 2), 2: (2, 1)}
