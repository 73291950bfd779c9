"""What the table-question-answering pipeline computes around the model: the table as text and the
value of an aggregated answer.

* :func:`text_table` checks a table (a ``pandas.DataFrame`` or a dict of columns) and turns every
  cell into the text the tokenizer reads and the answer shows (numbers, dates and missing values
  included: a table read from Parquet or built in code need not be all strings).
* :func:`aggregate_value` computes what an aggregated answer stands for: the sum, the average or
  the count of the selected cells. Numbers are read from a cell's text the way the table tokenizer
  reads them (``"1,234"`` is 1234, ``"3rd"`` is 3, ``"36 pages"`` is 36); a cell holding no number
  is listed under ``"not_numbers"`` and left out of SUM and AVERAGE, never an error.
"""

from __future__ import annotations

import datetime
import math
import numbers
from typing import Any, Sequence

import numpy as np
import pandas as pd

from polyformer.errors import ConfigError

__all__ = ["AGGREGATIONS", "aggregate_value", "cell_number", "cell_text", "text_table"]

#: the aggregations that have a value (any other aggregator, e.g. NONE, is a plain cell answer)
AGGREGATIONS = ("SUM", "AVERAGE", "COUNT")


def cell_text(value: Any) -> str:
    """The text of one cell: strings as written, missing values empty, whole floats without ``.0``."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return ""
        # a count read from a column with gaps arrives as 3.0; "3" is how the table shows it
        if number.is_integer() and abs(number) < 1e15:
            return str(int(number))
        return repr(number)
    if isinstance(value, (pd.Timestamp, datetime.datetime)):
        if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):  # lists and other containers: not a missing value
        pass
    return str(value)


def text_table(table: Any) -> pd.DataFrame:
    """The table as a DataFrame of cell texts (:func:`cell_text`) with a 0..n-1 row index.

    The table tokenizer's checks apply first, so an unusable table (none, empty, unnamed or
    duplicate columns, columns of unequal length) raises its named :class:`DataError`.
    """
    from polyformer.processors.table_values import read_table

    read_table(table)  # only for its checks: the texts it makes show 3.0 and "nan" where a reader expects 3 and ""
    frame = pd.DataFrame(table) if isinstance(table, dict) else table
    columns = {name: [cell_text(value) for value in frame[name].tolist()] for name in frame.columns}
    return pd.DataFrame(columns, dtype=object)


def cell_number(text: str) -> float | None:
    """The first number the table tokenizer reads in a cell's text ("1,234" 1234, "3rd" 3, "36 pages" 36),
    or None when it reads none (words, a date such as "March 2007", an empty cell).

    The cell is read on its own: unlike the tokenizer's column features, a cell's value does not
    depend on how many of its neighbours are numbers (a year such as "1990", which the tokenizer
    may file as a date, still counts as the number 1990).
    """
    from polyformer.processors.table_values import text_values

    return next((value.number for value in text_values(text) if value.number is not None), None)


def aggregate_value(aggregator: str, cells: Sequence[str]) -> dict[str, Any]:
    """``{"value", "value_cells", "not_numbers"}`` for an aggregated answer over ``cells`` (texts).

    COUNT counts every selected cell (a count needs no numbers); SUM and AVERAGE use the cells that
    hold a number (``value_cells``) and list the others under ``not_numbers``. ``value`` is None when
    SUM or AVERAGE find no number at all, and AVERAGE of nothing; the SUM of no cells is 0.
    """
    name = aggregator.upper()
    if name not in AGGREGATIONS:
        raise ConfigError(f"no value for aggregator {aggregator!r}; values exist for {', '.join(AGGREGATIONS)}")
    if name == "COUNT":
        return {"value": float(len(cells)), "value_cells": list(cells), "not_numbers": []}
    used, skipped, numbers_ = [], [], []
    for cell in cells:
        number = cell_number(cell)
        if number is None:
            skipped.append(cell)
        else:
            used.append(cell)
            numbers_.append(number)
    value: float | None
    if not numbers_:
        value = 0.0 if name == "SUM" and not cells else None
    elif name == "SUM":
        value = math.fsum(numbers_)
    else:
        value = math.fsum(numbers_) / len(numbers_)
    return {"value": value, "value_cells": used, "not_numbers": skipped}
