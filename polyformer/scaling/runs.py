"""Runs tables: read CSV / Parquet / JSON Lines, map column aliases, validate, derive D or C.

A runs table has one row per measured loss. Canonical columns (any subset, aliases accepted,
case, spaces, dashes and underscores ignored):

===========  ====================================================================================
``N``        parameters: ``params``, ``parameters``, ``n_params``, ``num_params``, ``model_size``
             (``Model Size``), ``non_embedding_params``
``D``        training tokens: ``tokens``, ``n_tokens``, ``num_tokens``, ``training_tokens``, ``data``
``C``        training FLOPs: ``flops``, ``flop``, ``compute``, ``training_flop`` (``Training FLOP``),
             ``training_flops``
``loss``     ``final_loss``, ``test_loss``, ``val_loss``, ``eval_loss``, ``validation_loss``
``step``     optional, for learning curves: ``steps``, ``iteration``, ``iter``, ``S``
``run``      optional run identifier (rows of one training curve): ``run_id``, ``run_name``, ``name``
===========  ====================================================================================

When ``D`` is missing it is derived as ``C / (6 N)``, and ``C`` as ``6 N D`` when ``C`` is
missing; each derivation is recorded in :attr:`Runs.notes`. Any source of run records (a file,
a run store, a Python list) becomes a :class:`Runs` through :func:`runs_from_frame`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from polyformer.errors import DataError

NUMERIC_COLUMNS = ("N", "D", "C", "loss", "step")
ALIASES: dict[str, tuple[str, ...]] = {
    "N": ("n", "params", "parameters", "n_params", "num_params", "nparams", "model_size",
          "non_embedding_params", "parameter_count"),
    "D": ("d", "tokens", "n_tokens", "num_tokens", "training_tokens", "data", "dataset_size"),
    "C": ("c", "flops", "flop", "compute", "training_flop", "training_flops", "train_flops"),
    "loss": ("loss", "final_loss", "test_loss", "val_loss", "eval_loss", "validation_loss"),
    "step": ("step", "steps", "iteration", "iter", "s"),
    "run": ("run", "run_id", "run_name", "name"),
}
FLOPS_PER_PARAM_TOKEN = 6.0  # C ≈ 6 N D: forward 2 N plus backward 4 N FLOPs per token.


def _key(name: str) -> str:
    """Case-, space-, dash- and underscore-insensitive column key."""
    return re.sub(r"[\s_\-]+", "_", str(name).strip().lower())


_ALIAS_TO_CANONICAL = {_key(alias): canon for canon, aliases in ALIASES.items() for alias in aliases}


def describe_aliases() -> str:
    """One line per canonical column listing its accepted names (for error messages and help)."""
    return "; ".join(f"{canon}: {', '.join(aliases)}" for canon, aliases in ALIASES.items())


@dataclass
class Runs:
    """A validated runs table with canonical columns, and notes on what was derived."""

    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    source: str = "runs"

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.frame.columns)

    def has(self, column: str) -> bool:
        return column in self.frame.columns

    def require(self, columns: Sequence[str], purpose: str) -> None:
        """Raise DataError naming what is missing, what was found and the accepted aliases."""
        missing = [c for c in columns if c not in self.frame.columns]
        if missing:
            wanted = "; ".join(f"{c} ({', '.join(ALIASES[c])})" for c in missing)
            raise DataError(
                f"{self.source}: {purpose} needs column(s) {', '.join(missing)} but found only "
                f"{', '.join(self.columns) or '(none)'}; accepted names: {wanted}"
            )

    def values(self, column: str) -> np.ndarray:
        """A numeric column as float64."""
        return self.frame[column].to_numpy(dtype=np.float64)

    def subset(self, mask: np.ndarray | Sequence[bool]) -> "Runs":
        """The rows where ``mask`` is True (notes kept)."""
        return Runs(self.frame.loc[np.asarray(mask, dtype=bool)].reset_index(drop=True), list(self.notes), self.source)

    def drop_highest_loss(self, count: int) -> "Runs":
        """Without the ``count`` rows of highest loss (Besiroglu et al. drop 5 outliers)."""
        if count <= 0:
            return self
        if count >= len(self) - 1:
            raise DataError(f"cannot drop {count} of {len(self)} runs: at least two must remain")
        keep = self.frame["loss"].rank(method="first", ascending=False).to_numpy() > count
        out = self.subset(keep)
        out.notes.append(f"dropped the {count} highest-loss rows")
        return out


def runs_from_frame(frame: pd.DataFrame, source: str = "runs") -> Runs:
    """Normalise column names, validate values and derive D = C/(6N) or C = 6ND where missing."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{source}: expected a table (pandas DataFrame), got {type(frame).__name__}")
    renamed: dict[Any, str] = {}
    seen: dict[str, Any] = {}
    for column in frame.columns:
        canon = _ALIAS_TO_CANONICAL.get(_key(column))
        if canon is None:
            continue
        if canon in seen:
            raise DataError(
                f"{source}: columns {seen[canon]!r} and {column!r} both name {canon}; keep one of them"
            )
        seen[canon] = column
        renamed[column] = canon
    found = [str(c) for c in frame.columns]
    if "loss" not in seen:
        raise DataError(
            f"{source}: no loss column; found columns {', '.join(found) or '(none)'}; "
            f"accepted names: {describe_aliases()}"
        )
    table = frame[list(renamed)].rename(columns=renamed).reset_index(drop=True)
    if len(table) == 0:
        raise DataError(f"{source}: the table has no rows")
    for column in NUMERIC_COLUMNS:
        if column in table.columns:
            table[column] = _checked_numeric(table[column], column, seen[column], source)
    if "run" in table.columns:
        table["run"] = table["run"].astype(str)
    notes: list[str] = []
    if "D" not in table.columns and {"N", "C"} <= set(table.columns):
        table["D"] = table["C"] / (FLOPS_PER_PARAM_TOKEN * table["N"])
        notes.append("D (training tokens) was not given: derived as C / (6 N)")
    if "C" not in table.columns and {"N", "D"} <= set(table.columns):
        table["C"] = FLOPS_PER_PARAM_TOKEN * table["N"] * table["D"]
        notes.append("C (training FLOPs) was not given: derived as 6 N D")
    n_runs = table["run"].nunique() if "run" in table.columns else len(table)
    if n_runs < 2:
        raise DataError(
            f"{source}: a single run cannot determine a scaling law; give several runs "
            "(different sizes, data or compute)"
        )
    ordered = [c for c in ("run", "N", "D", "C", "step", "loss") if c in table.columns]
    return Runs(table[ordered], notes, source)


def _checked_numeric(series: pd.Series, column: str, original: Any, source: str) -> pd.Series:
    values = pd.to_numeric(series, errors="coerce")
    bad_type = values.isna() & series.notna()
    if bad_type.any():
        row = int(np.flatnonzero(bad_type.to_numpy())[0])
        raise DataError(f"{source}: column {original!r} ({column}) has a non-numeric value {series.iloc[row]!r} in row {row}")
    array = values.to_numpy(dtype=np.float64)
    nan_rows = np.flatnonzero(~np.isfinite(array))
    if len(nan_rows):
        raise DataError(
            f"{source}: column {original!r} ({column}) has {len(nan_rows)} missing/NaN/infinite value(s), "
            f"first in row {int(nan_rows[0])}; remove or fill those rows"
        )
    bad_rows = np.flatnonzero(array <= 0)
    if len(bad_rows):
        row = int(bad_rows[0])
        raise DataError(
            f"{source}: column {original!r} ({column}) must be positive (scaling laws use logarithms) but has "
            f"{len(bad_rows)} zero or negative value(s), first {array[row]!r} in row {row}"
        )
    return pd.Series(array, index=series.index)


def runs_from_records(records: Iterable[Mapping[str, Any]], source: str = "records") -> Runs:
    """Runs from dicts (e.g. rows of a run store): ``[{"N": ..., "D": ..., "loss": ...}, ...]``."""
    return runs_from_frame(pd.DataFrame(list(records)), source)


def read_runs(path: str | Path) -> Runs:
    """Read runs from a CSV/TSV, Parquet or JSON Lines (or JSON array) file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"runs file {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq"):
        with path.open("rb") as handle:
            if b"\x00" in handle.read(8192):
                raise DataError(
                    f"{str(path)!r} is not a readable table: it holds binary data; "
                    "give CSV, Parquet or JSON Lines with one run per row"
                )
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(path, lines=True)
        elif suffix == ".json":
            frame = _read_json_table(path)
        elif suffix == ".tsv":
            frame = pd.read_csv(path, sep="\t")
        else:
            frame = pd.read_csv(path)
    except DataError:
        raise
    except Exception as error:  # pandas/pyarrow raise many types for a file that is not a table
        raise DataError(
            f"{str(path)!r} is not a readable table ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
            "give CSV, Parquet or JSON Lines with one run per row"
        ) from None
    if not isinstance(frame, pd.DataFrame) or frame.shape[1] == 0:
        raise DataError(f"{str(path)!r} holds no table columns; give CSV, Parquet or JSON Lines with one run per row")
    return runs_from_frame(frame, source=str(path))


def _read_json_table(path: Path) -> pd.DataFrame:
    """A .json file: one array of row objects, or JSON Lines."""
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    if head.startswith(b"["):
        return pd.read_json(path, orient="records")
    return pd.read_json(path, lines=True)
