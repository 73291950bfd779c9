"""Small tables to ask questions about: the local tables of ``vega_datasets`` and synthetic ones.

Every table is a :class:`NamedTable`: a ``pandas.DataFrame`` whose cells are all strings (as a
table-QA model reads them: numbers are written out, never kept as floats), a ``name`` that is
unique, and a ``source`` that groups tables cut from the same data (so a split can keep a whole
source on one side).

The first column of every table is its *key*: a text column whose values are unique within the
table, which lookups and superlatives name ("the horsepower of the ford torino"). The other
columns are numbers, except an optional *category* column whose values repeat (so that
"where origin is Europe" selects several rows).

* :func:`vega_tables` — the tables ``vega_datasets`` ships *in its wheel* (``local_data``: cars,
  barley, crimea, stocks ...; nothing is downloaded), a few columns each, cut into tables of at
  most ``max_rows`` rows. Without the package it returns no tables (and says so once).
* :func:`synthetic_tables` — products, cities, sports results, book chapters, planets, drawn
  from a seed.
* :func:`book_table` — the table of contents used by the documentation's example.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from polyformer.errors import ConfigError, DataError

__all__ = ["NamedTable", "VEGA_SPECS", "VegaSpec", "book_table", "format_number", "synthetic_tables", "vega_available",
           "vega_tables"]


@dataclass
class NamedTable:
    """A table of strings: ``frame`` (first column the key), its unique ``name``, the ``source`` it was
    cut from, and the name of its ``category`` column (repeating text values), if any."""

    name: str
    frame: pd.DataFrame
    source: str
    category: str | None = None

    def __post_init__(self) -> None:
        if self.frame.empty or len(self.frame.columns) < 2:
            raise DataError(f"table {self.name!r} needs at least one row and two columns (a key and a value)")
        if self.frame.columns.duplicated().any():
            raise DataError(f"table {self.name!r} has duplicate column names; rename them")
        if self.frame.iloc[:, 0].duplicated().any():
            raise DataError(f"table {self.name!r}: the key column {self.frame.columns[0]!r} must have unique values")

    @property
    def key(self) -> str:
        """The key column's name."""
        return str(self.frame.columns[0])

    @property
    def numeric_columns(self) -> list[str]:
        """The columns whose every cell reads as a number."""
        return [c for c in self.frame.columns[1:] if all(_is_number(v) for v in self.frame[c])]


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def format_number(value: Any, decimals: int = 1) -> str:
    """A number as a table cell: integers without a decimal point, others rounded to ``decimals``
    places without trailing zeros (``12.0`` -> ``"12"``, ``3.14159`` -> ``"3.1"``)."""
    value = round(float(value), decimals)
    if value == int(value):
        return str(int(value))
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".")


def _as_strings(frame: pd.DataFrame, decimals: int = 1) -> pd.DataFrame:
    """Every cell as the string a reader sees (numbers via :func:`format_number`, dates as YYYY-MM-DD)."""
    out = {}
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            out[column] = values.dt.strftime("%Y-%m-%d").astype(object)
        elif pd.api.types.is_numeric_dtype(values):
            out[column] = [format_number(v, decimals) for v in values]
        else:
            out[column] = [str(v).strip() for v in values]
    return pd.DataFrame(out, dtype=object).reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# vega_datasets
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VegaSpec:
    """How one ``vega_datasets`` table becomes question tables: its ``key`` column (made by
    ``make_key`` when the data have none), the value ``columns``, an optional ``category`` column,
    and ``group_by``: one table per value of that column (e.g. one per stock symbol)."""

    dataset: str
    key: str
    columns: tuple[str, ...]
    category: str | None = None
    group_by: str | None = None
    make_key: Callable[[pd.DataFrame], pd.Series] | None = None


def _riot_names(frame: pd.DataFrame) -> pd.Series:
    return frame["first_name"].astype(str) + " " + frame["last_name"].astype(str)


def _month(frame: pd.DataFrame) -> pd.Series:
    return frame["date"].dt.strftime("%Y-%m")


# Columns chosen for a mix of a text key, a few numbers and (where the data have one) a repeating
# category; datasets without a natural key (iris, anscombe) or only coordinates (airports) are left out.
VEGA_SPECS: tuple[VegaSpec, ...] = (
    VegaSpec("cars", "Name", ("Horsepower", "Miles_per_Gallon", "Cylinders", "Weight_in_lbs"), category="Origin"),
    VegaSpec("barley", "variety", ("yield",), group_by="site"),
    VegaSpec("burtin", "Bacteria", ("Penicillin", "Streptomycin", "Neomycin"), category="Gram_Staining"),
    VegaSpec("crimea", "month", ("wounds", "other", "disease"), make_key=_month),
    VegaSpec("driving", "year", ("miles", "gas")),
    VegaSpec("iowa-electricity", "year", ("net_generation",), group_by="source", make_key=lambda f: f["year"].dt.strftime("%Y")),
    VegaSpec("la-riots", "name", ("age",), category="gender", make_key=_riot_names),
    VegaSpec("ohlc", "date", ("open", "high", "low", "close")),
    VegaSpec("seattle-weather", "date", ("precipitation", "temp_max", "temp_min", "wind"), category="weather"),
    VegaSpec("stocks", "date", ("price",), group_by="symbol"),
    VegaSpec("us-employment", "month", ("nonfarm", "construction", "manufacturing", "financial_activities")),
    VegaSpec("wheat", "year", ("wheat", "wages")),
)

_warned = False


def vega_available() -> bool:
    """Whether ``vega_datasets`` is installed."""
    return importlib.util.find_spec("vega_datasets") is not None


def _load_vega(dataset: str) -> pd.DataFrame:
    """A dataset from the ``vega_datasets`` wheel; refuses one that would be downloaded."""
    from vega_datasets import local_data

    if dataset not in local_data.list_datasets():
        raise DataError(f"vega_datasets has no local table {dataset!r} (only the tables in its wheel are used, "
                        f"never downloads); local tables: {', '.join(local_data.list_datasets())}")
    with warnings.catch_warnings():  # its reader passes pandas an option pandas 3 deprecates; harmless here
        warnings.filterwarnings("ignore", message=".*convert_dates.*")
        return local_data(dataset)


def _vega_frame(spec: VegaSpec, raw: pd.DataFrame) -> pd.DataFrame:
    frame = raw.copy()
    if spec.make_key is not None:
        frame[spec.key] = spec.make_key(frame)
    columns = [spec.key, *spec.columns] + ([spec.category] if spec.category else [])
    frame = frame[columns].dropna()
    return frame.drop_duplicates(subset=[spec.key]).reset_index(drop=True)


def vega_tables(max_rows: int = 12, per_source: int = 4, seed: int = 0,
                datasets: tuple[str, ...] | None = None) -> list[NamedTable]:
    """Question tables cut from the local ``vega_datasets`` tables: up to ``per_source`` tables of
    ``max_rows`` rows each per dataset (or per ``group_by`` value), rows drawn without replacement
    with ``seed`` and kept in their original order. ``datasets``: a subset of :data:`VEGA_SPECS` by
    name. Returns no tables (with a warning) when ``vega_datasets`` is not installed."""
    global _warned
    if max_rows < 2 or per_source < 1:
        raise ConfigError(f"vega_tables needs max_rows >= 2 and per_source >= 1, got {max_rows} and {per_source}")
    if not vega_available():
        if not _warned:
            warnings.warn("vega_datasets is not installed (pip install --no-deps vega_datasets); using synthetic "
                          "tables only", stacklevel=2)
            _warned = True
        return []
    specs = [s for s in VEGA_SPECS if datasets is None or s.dataset in datasets]
    unknown = set(datasets or ()) - {s.dataset for s in VEGA_SPECS}
    if unknown:
        raise ConfigError(f"unknown vega tables {sorted(unknown)}; choose from {[s.dataset for s in VEGA_SPECS]}")
    rng = np.random.default_rng(seed)
    tables = []
    for spec in specs:
        raw = _load_vega(spec.dataset)
        groups = [(None, raw)] if spec.group_by is None else [(str(k), g) for k, g in raw.groupby(spec.group_by)]
        for group, part in groups:
            frame = _vega_frame(spec, part)
            if len(frame) < 2:
                continue
            count = min(per_source, max(1, len(frame) // max_rows)) if spec.group_by is None else 1
            for index in range(count):
                rows = np.sort(rng.choice(len(frame), size=min(max_rows, len(frame)), replace=False))
                name = "-".join(x for x in (f"vega-{spec.dataset}", group, str(index)) if x is not None)
                tables.append(NamedTable(name, _as_strings(frame.iloc[rows]), f"vega-{spec.dataset}", spec.category))
    return tables


# ------------------------------------------------------------------------------------------------
# Synthetic tables
# ------------------------------------------------------------------------------------------------
_PRODUCTS = ["lamp", "kettle", "toaster", "blender", "desk", "chair", "mirror", "rug", "clock", "fan", "heater",
             "pillow", "blanket", "shelf", "stool", "vase", "radio", "camera", "speaker", "router", "monitor",
             "keyboard", "mouse", "printer", "scanner", "tablet", "charger", "cable", "backpack", "umbrella"]
_PRODUCT_CATEGORIES = ["kitchen", "office", "home", "electronics"]
_CITIES = ["Lisbon", "Porto", "Madrid", "Seville", "Lyon", "Nantes", "Turin", "Naples", "Munich", "Hamburg", "Leeds",
           "Bristol", "Krakow", "Gdansk", "Ghent", "Bruges", "Bergen", "Malmo", "Tampere", "Graz", "Brno", "Split",
           "Cork", "Galway", "Aarhus", "Basel", "Utrecht", "Bologna", "Valencia", "Marseille"]
_COUNTRIES = ["Portugal", "Spain", "France", "Italy", "Germany"]
_TEAMS = ["Lions", "Tigers", "Bears", "Wolves", "Eagles", "Hawks", "Sharks", "Falcons", "Ravens", "Panthers",
          "Bulls", "Rams", "Foxes", "Owls", "Comets", "Rockets", "Pirates", "Giants", "Knights", "Dragons"]
_DIVISIONS = ["north", "south", "east"]
_TOPICS = ["Introduction", "Foundations", "Tokenization", "Attention", "Training", "Evaluation", "Translation",
           "Summarization", "Question Answering", "Generation", "Retrieval", "Compression", "Deployment",
           "Multilingual Models", "Vision", "Speech", "Tables", "Ethics", "Scaling", "Conclusion"]
_PLANETS = ["Aris", "Belos", "Cyra", "Dorn", "Elio", "Fenn", "Gala", "Hesp", "Ixo", "Juno", "Kael", "Lyra", "Myr",
            "Nox", "Orin", "Pax", "Quill", "Rhea", "Sol", "Tarn"]
_SYSTEMS = ["inner", "outer", "belt"]


def _products(rng: np.random.Generator, rows: int) -> tuple[dict[str, list[Any]], str]:
    names = rng.choice(_PRODUCTS, size=rows, replace=False).tolist()
    return {"product": names, "category": rng.choice(_PRODUCT_CATEGORIES, size=rows).tolist(),
            "price": np.round(rng.uniform(3, 400, rows), 2).tolist(), "stock": rng.integers(0, 500, rows).tolist(),
            "rating": np.round(rng.uniform(1, 5, rows), 1).tolist()}, "category"


def _cities(rng: np.random.Generator, rows: int) -> tuple[dict[str, list[Any]], str]:
    return {"city": rng.choice(_CITIES, size=rows, replace=False).tolist(),
            "country": rng.choice(_COUNTRIES, size=rows).tolist(),
            "population": (rng.integers(50, 4000, rows) * 1000).tolist(),
            "area": rng.integers(20, 900, rows).tolist(), "founded": rng.integers(100, 1900, rows).tolist()}, "country"


def _sports(rng: np.random.Generator, rows: int) -> tuple[dict[str, list[Any]], str]:
    wins = rng.integers(0, 30, rows)
    draws = rng.integers(0, 10, rows)
    return {"team": rng.choice(_TEAMS, size=rows, replace=False).tolist(),
            "division": rng.choice(_DIVISIONS, size=rows).tolist(), "wins": wins.tolist(),
            "losses": rng.integers(0, 30, rows).tolist(), "draws": draws.tolist(),
            "points": (3 * wins + draws).tolist()}, "division"


def _chapters(rng: np.random.Generator, rows: int) -> tuple[dict[str, list[Any]], None]:
    names = rng.choice(_TOPICS, size=rows, replace=False).tolist()
    pages = rng.integers(3, 60, rows)
    start = 1 + np.concatenate([[0], np.cumsum(pages + 1)[:-1]])
    return {"chapter": list(range(rows)), "name": names, "start_page": start.tolist(),
            "end_page": (start + pages).tolist(), "number_of_pages": pages.tolist()}, None


def _planets(rng: np.random.Generator, rows: int) -> tuple[dict[str, list[Any]], str]:
    return {"planet": rng.choice(_PLANETS, size=rows, replace=False).tolist(),
            "system": rng.choice(_SYSTEMS, size=rows).tolist(), "moons": rng.integers(0, 40, rows).tolist(),
            "radius": np.round(rng.uniform(0.2, 12, rows), 1).tolist(),
            "distance": np.round(rng.uniform(0.3, 40, rows), 1).tolist()}, "system"


SYNTHETIC_KINDS: dict[str, Callable[[np.random.Generator, int], tuple[dict[str, list[Any]], str | None]]] = {
    "products": _products, "cities": _cities, "sports": _sports, "chapters": _chapters, "planets": _planets,
}


def synthetic_tables(per_kind: int = 20, max_rows: int = 10, min_rows: int = 4, seed: int = 0,
                     kinds: tuple[str, ...] | None = None) -> list[NamedTable]:
    """``per_kind`` tables of each synthetic kind (products, cities, sports, chapters, planets), each of
    ``min_rows``..``max_rows`` rows, all drawn from ``seed`` (the same seed gives the same tables)."""
    kinds = tuple(SYNTHETIC_KINDS) if kinds is None else tuple(kinds)
    unknown = set(kinds) - set(SYNTHETIC_KINDS)
    if unknown:
        raise ConfigError(f"unknown synthetic table kinds {sorted(unknown)}; choose from {list(SYNTHETIC_KINDS)}")
    if not 2 <= min_rows <= max_rows <= 20:
        raise ConfigError(f"synthetic tables need 2 <= min_rows <= max_rows <= 20, got {min_rows} and {max_rows}")
    tables = []
    for kind in kinds:
        for index in range(per_kind):
            rng = np.random.default_rng([seed, list(SYNTHETIC_KINDS).index(kind), index])
            columns, category = SYNTHETIC_KINDS[kind](rng, int(rng.integers(min_rows, max_rows + 1)))
            frame = _as_strings(pd.DataFrame(columns), decimals=2)
            if kind == "chapters":  # the name is the key the questions name; the chapter number is a value
                frame = frame[["name", "chapter", "start_page", "end_page", "number_of_pages"]]
            tables.append(NamedTable(f"{kind}-{index}", frame, f"synthetic-{kind}", category))
    return tables


# The documentation's table of contents: six chapters whose page counts are 10, 36, 24, 46, 19 and 3
# (138 in all); the question-answering chapter starts on page 74; three chapters (1, 2, 3) have more
# than 20 pages; chapter 4 is about summarization.
_BOOK = [(0, "Introduction", 1, 11), (1, "Text classification", 12, 48), (2, "Named Entity Recognition", 49, 73),
         (3, "Question Answering", 74, 120), (4, "Summarization", 121, 140), (5, "Conclusion", 141, 144)]


def book_table() -> pd.DataFrame:
    """A book's table of contents (chapter, name, start_page, end_page, number_of_pages), every cell a
    string, as the table-question-answering example builds it (number_of_pages = end - start)."""
    frame = pd.DataFrame(_BOOK, columns=["chapter", "name", "start_page", "end_page"])
    frame["number_of_pages"] = frame["end_page"] - frame["start_page"]
    return frame.astype(str)
