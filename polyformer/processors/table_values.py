"""Numbers and dates in table cells and questions, as TAPAS reads them.

TAPAS gives the model three numeric features besides the text: a cell's rank within its column
(and the inverse rank), how each cell compares with the numbers in the question (equal, less,
greater), and, for the weakly supervised answer loss, each cell's float value. All three come
from the parsing rules of the original TAPAS release (which ``transformers`` follows), kept
here rule for rule so that the features match the released checkpoints:

* a text is lower-cased and its whitespace collapsed, then every number ("1,234.5", "-3",
  ".5", "21st", "seven", "third") and every date ("March 2007", "2010-05-04", "1990s", ...) in
  it is found; where found spans overlap, the longest wins;
* a column is numeric when at least 70% of its cells hold a value of one type (number or
  date; a tie goes to dates, so a column of years is a date column); each cell keeps its first
  value of that type;
* values compare by number, or by the (year, month, day) fields every value of the column has.

:func:`read_table` turns a DataFrame (or a dict of columns) into the cell texts all of this reads,
rejecting tables a model cannot be given.

Parsing is the slow part of TAPAS preprocessing, so each distinct text is parsed once
(:func:`text_values` is cached) and a column's values are computed once per table, not once per
question.
"""

from __future__ import annotations

import datetime
import re
from collections import Counter
from functools import lru_cache
from typing import Any, Callable, NamedTuple, Sequence

from polyformer.errors import DataError

__all__ = ["EQ", "GT", "LT", "Value", "column_ranks", "consolidate", "is_empty_text", "normalize_for_match",
           "numeric_relations", "parse_date", "parse_number", "read_table", "sort_key", "text_spans",
           "text_values"]

#: bits of the numeric-relation feature: question value equal to / less than / greater than the cell's
EQ, LT, GT = 1, 2, 4


class Value(NamedTuple):
    """A parsed value: a number, or a date as (year, month, day) floats with None for missing fields."""

    number: float | None = None
    date: tuple[float | None, float | None, float | None] | None = None

    @property
    def kind(self) -> str:
        """"number" or "date"."""
        return "number" if self.number is not None else "date"


# A number: optional sign (at the start or after whitespace), then ".5" or "1,234.5".
_NUMBER = re.compile(r"((^|\s)[+-])?((\.\d+)|(\d+(,\d\d\d)*(\.\d*)?))")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve")
_ORDINAL_WORDS = ("zeroth", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
                  "tenth", "eleventh", "twelfth")
_ORDINAL_SUFFIXES = ("st", "nd", "rd", "th")
# Dates outside these years are more likely other numbers (counts, codes) than years.
_MIN_YEAR, _MAX_YEAR = 1700, 2016
_MAX_DATE_WORDS = 5
# strptime formats in the order they are tried, with the fields each one sets (year, month, day)
_DATE_FORMATS = (
    ("%B", "m"), ("%Y", "y"), ("%Ys", "y"), ("%b %Y", "ym"), ("%B %Y", "ym"), ("%B %d", "md"), ("%b %d", "md"),
    ("%d %b", "md"), ("%d %B", "md"), ("%B %d, %Y", "ymd"), ("%d %B %Y", "ymd"), ("%m-%d-%Y", "ymd"),
    ("%Y-%m-%d", "ymd"), ("%Y-%m", "ym"), ("%d %b %Y", "ymd"), ("%b %d, %Y", "ymd"), ("%d.%m.%Y", "ymd"),
    ("%A, %b %d", "md"), ("%A, %B %d", "md"),
)
# what each strptime field may look like: a cheap regular expression that rules out most spans
# before the (slow) strptime call
_FIELD_PATTERNS = {"%A": r"\w+", "%B": r"\w+", "%Y": r"\d{4}", "%b": r"\w{3}", "%d": r"\d{1,2}", "%m": r"\d{1,2}"}


def _format_regex(fmt: str) -> re.Pattern[str]:
    pattern = fmt.replace(".", r"\.").replace("-", r"\-").replace(" ", r"\s+")
    for field, regex in _FIELD_PATTERNS.items():
        pattern = pattern.replace(field, regex)
    return re.compile(f"^{pattern}$")


_DATE_MATCHERS = tuple((fmt, fields, _format_regex(fmt)) for fmt, fields in _DATE_FORMATS)


def normalize_for_match(text: str) -> str:
    """Lower-case and collapse whitespace (how both cells and questions are compared)."""
    return " ".join(text.lower().split())


def is_empty_text(text: str) -> bool:
    """Whether a cell reads as empty: nothing but punctuation and spaces, or "n/a", "?", "nan"."""
    text = text.lower().strip()
    if text in ("n/a", "?", "nan"):
        return True
    return not re.sub(r"[^\w\d]+", " ", text).replace("_", " ").strip()


def parse_number(text: str) -> float | None:
    """A cardinal ("1,234.5") or ordinal ("21st") number; None when the text is not one."""
    for suffix in _ORDINAL_SUFFIXES:
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    # float() also reads "nan" and "infinity", which are words here, not numbers
    return None if value != value or value == float("inf") else value


def parse_date(text: str) -> Value | None:
    """A date in one of TAPAS's formats (years 1700-2016); None when the text is not one."""
    text = re.sub(r"Sept\b", "Sep", text)
    for fmt, fields, regex in _DATE_MATCHERS:
        if not regex.match(text):
            continue
        try:
            date = datetime.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
        if not _MIN_YEAR <= date.year <= _MAX_YEAR:
            continue
        return Value(date=(float(date.year) if "y" in fields else None, float(date.month) if "m" in fields else None,
                           float(date.day) if "d" in fields else None))
    return None


def _word_spans(text: str, max_words: int) -> list[tuple[int, int]]:
    """Every run of 1..max_words consecutive words (alphanumeric runs) as (begin, end) offsets."""
    spans, starts = [], []
    for index, char in enumerate(text):
        if not char.isalnum():
            continue
        if index == 0 or not text[index - 1].isalnum():
            starts.append(index)
        if index + 1 == len(text) or not text[index + 1].isalnum():
            spans.extend((start, index + 1) for start in starts[-max_words:])
    return spans


def text_spans(text: str) -> list[tuple[int, int, list[Value]]]:
    """The numbers and dates in ``text`` (already normalised) as (begin, end, values), left to right.

    A span may carry several readings ("2010" is both a number and a year); a span inside a
    longer one is dropped.
    """
    found: dict[tuple[int, int], list[Value]] = {}
    for match in _NUMBER.finditer(text):
        number = parse_number(text[match.start():match.end()])
        if number is not None:
            found.setdefault(match.span(), []).append(Value(number=number))
    for begin, end in _word_spans(text, 1):
        if (begin, end) in found:
            continue
        word = text[begin:end]
        readings = [parse_number(word)]
        readings += [float(_NUMBER_WORDS.index(word))] if word in _NUMBER_WORDS else []
        readings += [float(_ORDINAL_WORDS.index(word))] if word in _ORDINAL_WORDS else []
        for number in readings:
            if number is not None:
                found.setdefault((begin, end), []).append(Value(number=number))
    for begin, end in _word_spans(text, _MAX_DATE_WORDS):
        date = parse_date(text[begin:end])
        if date is not None:
            found.setdefault((begin, end), []).append(date)
    # longest first (the earlier of equal lengths first); keep a span unless a kept one contains it
    kept: list[tuple[int, int, list[Value]]] = []
    for (begin, end), values in sorted(found.items(), key=lambda item: (item[0][1] - item[0][0], -item[0][0]),
                                       reverse=True):
        if not any(b <= begin and end <= e for b, e, _ in kept):
            kept.append((begin, end, values))
    return sorted(kept, key=lambda span: span[0])


@lru_cache(maxsize=65536)
def text_values(text: str) -> tuple[Value, ...]:
    """Every value found in a cell or question text (normalised first), in reading order; cached."""
    return tuple(value for _, _, values in text_spans(normalize_for_match(text)) for value in values)


def consolidate(column: Sequence[Sequence[Value]], min_fraction: float = 0.7) -> dict[int, Value]:
    """Row -> value for a column whose cells' values are mostly of one kind; {} when it is not numeric.

    The kind held by the most cells wins (dates on a tie) if at least ``min_fraction`` of the
    cells hold it; each cell keeps its first value of that kind, a cell without one is left out.
    """
    counts = Counter(kind for values in column for kind in {value.kind for value in values})
    if not counts:
        return {}
    most = max(counts.values())
    if most < len(column) * min_fraction:
        return {}
    kind = "date" if counts.get("date") == most else "number"
    out = {}
    for row, values in enumerate(column):
        first = next((value for value in values if value.kind == kind), None)
        if first is not None:
            out[row] = first
    return out


def sort_key(values: Sequence[Value]) -> Callable[[Value], float | tuple[float, ...]] | None:
    """A key that orders ``values``: the number, or the date fields all of them have; None when they
    mix numbers and dates or share no date field."""
    kinds = {value.kind for value in values}
    if len(kinds) != 1:
        return None
    if kinds == {"number"}:
        return lambda value: value.number  # type: ignore[return-value]
    fields = [i for i in range(3) if all(value.date[i] is not None for value in values)]  # type: ignore[index]
    if not fields:
        return None
    return lambda value: tuple(value.date[i] for i in fields)  # type: ignore[index, misc]


def column_ranks(column: dict[int, Value]) -> dict[int, tuple[int, int]]:
    """Row -> (rank, inverse rank) of a consolidated column, equal values sharing a rank (1 = smallest)."""
    key = sort_key(list(column.values())) if column else None
    if key is None:
        return {}
    keys = {row: key(value) for row, value in column.items()}
    distinct = sorted(set(keys.values()))
    position = {k: i for i, k in enumerate(distinct)}
    return {row: (position[k] + 1, len(distinct) - position[k]) for row, k in keys.items()}


def numeric_relations(question: Sequence[Value], columns: Sequence[dict[int, Value]]) -> dict[tuple[int, int], int]:
    """(column, row) -> the OR of :data:`EQ`/:data:`LT`/:data:`GT` for how the question's values compare
    with the cell's (LT: the question's value is the smaller); cells with no relation are absent."""
    out: dict[tuple[int, int], int] = {}
    for value in question:
        for col, column in enumerate(columns):
            if not column:
                continue
            key = sort_key([*column.values(), value])
            if key is None:
                continue
            asked = key(value)
            for row, cell in column.items():
                other = key(cell)
                bit = EQ if asked == other else LT if asked < other else GT  # type: ignore[operator]
                out[col, row] = out.get((col, row), 0) | bit
    return out


def read_table(table: Any) -> tuple[list[str], list[list[str]]]:
    """(column names, rows of cell texts) of a DataFrame or a dict of columns; bad tables raise DataError.

    Cells are read as ``table.astype(str)`` reads them, column by column, except that a missing
    value (None, NaN, NA, NaT) becomes "nan", which TAPAS reads as an empty cell.
    """
    import pandas as pd

    if isinstance(table, dict):
        try:
            table = pd.DataFrame(table)
        except ValueError as error:
            raise DataError(f"cannot make a table of the dict of columns ({error}); give every column the same "
                            "number of cells") from None
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"the table must be a pandas.DataFrame or a dict of columns, got {type(table).__name__}")
    header = list(table.columns)
    if not header or len(table) == 0:
        raise DataError(f"the table is empty ({len(table)} rows, {len(header)} columns); give at least one row "
                        "and one column")
    wrong = [name for name in header if not isinstance(name, str)]
    if wrong:
        raise DataError(f"column names must be strings, got {wrong[:3]!r}; rename them, e.g. "
                        "table.columns = table.columns.astype(str)")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"duplicate column name(s) {repeated}; give every column a distinct name")
    columns = []
    for index in range(len(header)):
        series = table.iloc[:, index]
        texts = series.astype(str).tolist()
        columns.append(["nan" if missing else text for text, missing in zip(texts, series.isna().tolist())])
    return header, [list(row) for row in zip(*columns)]
