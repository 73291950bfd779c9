"""The run store: every training run of a sweep in one SQLite file (Python's built-in sqlite3).

Tables::

    runs   one row per run: sweep, name, config (JSON), N with and without embeddings, D (tokens),
           FLOPs (6 N D, and with the attention term), final validation loss, status
           (pending | running | finished | failed), error, timestamps, seconds
    curve  the loss curve of each run: (run, step, kind) -> tokens, loss, lr
           kind "train": the training loss of that optimiser step; kind "eval": validation loss
    meta   schema version

Every change is one transaction: a sweep killed at any moment leaves the store as it was before
the change (SQLite's rollback journal), and a finished run's curve and final loss are committed
together with its status. ``N`` and ``C`` of :meth:`RunStore.records` follow Kaplan et al.:
parameters outside the embedding tables, and ``C = 6 N D`` with that N (``params="total"``
counts every parameter instead).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from polyformer.errors import ConfigError, DataError

SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "finished", "failed")
PARAM_CHOICES = ("non_embedding", "total")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    sweep TEXT NOT NULL,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    params INTEGER NOT NULL CHECK (params > 0),
    params_non_embedding INTEGER NOT NULL CHECK (params_non_embedding > 0),
    tokens INTEGER NOT NULL CHECK (tokens > 0),
    flops REAL NOT NULL,
    flops_attention REAL NOT NULL,
    final_val_loss REAL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'finished', 'failed')),
    error TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    seconds REAL,
    UNIQUE (sweep, name)
);
CREATE TABLE IF NOT EXISTS curve (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('train', 'eval')),
    tokens INTEGER NOT NULL,
    loss REAL NOT NULL,
    lr REAL,
    PRIMARY KEY (run_id, step, kind)
);
"""


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs the same run: the model, the training fields that change results (not
    where checkpoints go or how often they are written) and the tokens trained on (not the folder
    they live in)."""
    from polyformer.train.config import RESUME_FREE_FIELDS

    keys = [k for k in ("model", "train", "data_fingerprint") if k in config]
    if not keys:
        return config
    out = {k: config[k] for k in keys}
    if isinstance(out.get("train"), dict):
        out["train"] = {k: v for k, v in out["train"].items() if k not in RESUME_FREE_FIELDS}
    return json.loads(json.dumps(out, sort_keys=True))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class RunRecord:
    """One row of the ``runs`` table."""

    id: int
    sweep: str
    name: str
    config: dict[str, Any]
    params: int
    params_non_embedding: int
    tokens: int
    flops: float
    flops_attention: float
    final_val_loss: float | None
    status: str
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    seconds: float | None


class RunStore:
    """A SQLite file of runs; open it with ``RunStore(path)`` (created when missing)."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise DataError(f"run store {str(self.path)!r} does not exist; run `polyformer scaling sweep --store "
                            f"{self.path}` first")
        if self.path.is_dir():
            raise DataError(f"run store {str(self.path)!r} is a folder; give a file name such as runs.sqlite")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) in _transaction.
        self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None:
                    self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) != SCHEMA_VERSION:
                    raise DataError(f"run store {str(self.path)!r} has schema version {row[0]}, this polyformer "
                                    f"reads version {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise DataError(f"{str(self.path)!r} is not a polyformer run store (SQLite says: {error})") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----- transactions ------------------------------------------------------------------------
    class _Transaction:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type: Any, *rest: Any) -> None:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _transaction(self) -> "_Transaction":
        return RunStore._Transaction(self._db)

    # ----- writing -----------------------------------------------------------------------------
    def add_run(self, sweep: str, name: str, config: dict[str, Any], params: int, params_non_embedding: int,
                tokens: int, flops: float, flops_attention: float) -> int:
        """Register a run (status pending) and return its id; an existing run of the same name is
        returned as is when it is the same run (same ``model`` and ``train`` entries of the config,
        or the same config when it has neither), and refused when it differs. Other entries (where
        the data folder lives, say) may change between sessions."""
        config_json = json.dumps(config, sort_keys=True)
        with self._transaction():
            row = self._db.execute("SELECT id, config FROM runs WHERE sweep = ? AND name = ?", (sweep, name)).fetchone()
            if row is not None:
                stored, given = _identity(json.loads(row["config"])), _identity(config)
                if "data_fingerprint" not in stored:  # recorded before data were fingerprinted
                    given.pop("data_fingerprint", None)
                if stored != given:
                    raise ConfigError(
                        f"run {name!r} of sweep {sweep!r} is already in {str(self.path)!r} with another config "
                        "or other data; use a new sweep name (--name) or a new store"
                    )
                return int(row["id"])
            cursor = self._db.execute(
                "INSERT INTO runs (sweep, name, config, params, params_non_embedding, tokens, flops, flops_attention,"
                " status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                (sweep, name, config_json, int(params), int(params_non_embedding), int(tokens), float(flops),
                 float(flops_attention), _now()),
            )
            return int(cursor.lastrowid)

    def mark_running(self, run_id: int) -> None:
        with self._transaction():
            self._db.execute("UPDATE runs SET status = 'running', error = NULL, started_at = COALESCE(started_at, ?)"
                             " WHERE id = ?", (_now(), run_id))

    def finish_run(self, run_id: int, final_val_loss: float, curve: Iterable[dict[str, Any]], seconds: float) -> None:
        """Store the loss curve and the final loss, and mark the run finished — all or nothing."""
        rows = [(run_id, int(p["step"]), p["kind"], int(p["tokens"]), float(p["loss"]), p.get("lr")) for p in curve]
        with self._transaction():
            self._db.execute("DELETE FROM curve WHERE run_id = ?", (run_id,))
            self._db.executemany("INSERT INTO curve VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("UPDATE runs SET status = 'finished', final_val_loss = ?, finished_at = ?, seconds = ?,"
                             " error = NULL WHERE id = ?", (float(final_val_loss), _now(), float(seconds), run_id))

    def fail_run(self, run_id: int, error: str) -> None:
        with self._transaction():
            self._db.execute("UPDATE runs SET status = 'failed', error = ? WHERE id = ?", (error, run_id))

    # ----- reading -----------------------------------------------------------------------------
    def runs(self, sweep: str | None = None, status: str | None = None) -> list[RunRecord]:
        """Runs in the order they were added, optionally of one sweep and/or one status."""
        if status is not None and status not in STATUSES:
            raise ConfigError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        query, args = "SELECT * FROM runs WHERE 1 = 1", []
        if sweep is not None:
            query += " AND sweep = ?"
            args.append(sweep)
        if status is not None:
            query += " AND status = ?"
            args.append(status)
        rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [RunRecord(**{**dict(row), "config": json.loads(row["config"])}) for row in rows]

    def run(self, run_id: int) -> RunRecord:
        rows = [r for r in self.runs() if r.id == run_id]
        if not rows:
            raise DataError(f"no run with id {run_id} in {str(self.path)!r}")
        return rows[0]

    def curve(self, run_id: int, kind: str = "eval") -> list[dict[str, Any]]:
        """The loss curve of a run: ``{"step", "tokens", "loss", "lr"}`` per point, by step."""
        rows = self._db.execute("SELECT step, tokens, loss, lr FROM curve WHERE run_id = ? AND kind = ? ORDER BY step",
                                (run_id, kind)).fetchall()
        return [dict(row) for row in rows]

    def sweeps(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT DISTINCT sweep FROM runs ORDER BY sweep")]

    def records(self, sweep: str | None = None, params: str = "non_embedding") -> list[dict[str, Any]]:
        """Finished runs as rows for a scaling-law fit: ``run, N, D, C, loss``.

        ``params``: ``"non_embedding"`` (Kaplan et al.'s N, the default) or ``"total"``; C = 6 N D
        with the chosen N.
        """
        if params not in PARAM_CHOICES:
            raise ConfigError(f"params must be one of {', '.join(PARAM_CHOICES)}, got {params!r}")
        out = []
        for run in self.runs(sweep=sweep, status="finished"):
            n = run.params_non_embedding if params == "non_embedding" else run.params
            out.append({"run": f"{run.sweep}/{run.name}", "N": n, "D": run.tokens, "C": 6.0 * n * run.tokens,
                        "loss": run.final_val_loss})
        return out


    def curve_records(self, sweep: str | None = None, params: str = "non_embedding",
                      kind: str = "train") -> list[dict[str, Any]]:
        """Learning curves of finished runs as rows ``run, N, D, C, step, loss`` (D: tokens so far)."""
        if params not in PARAM_CHOICES:
            raise ConfigError(f"params must be one of {', '.join(PARAM_CHOICES)}, got {params!r}")
        out = []
        for run in self.runs(sweep=sweep, status="finished"):
            n = run.params_non_embedding if params == "non_embedding" else run.params
            for point in self.curve(run.id, kind):
                out.append({"run": f"{run.sweep}/{run.name}", "N": n, "D": point["tokens"],
                            "C": 6.0 * n * point["tokens"], "step": point["step"], "loss": point["loss"]})
        return out


def read_store_runs(path: str | Path, sweep: str | None = None, params: str = "non_embedding",
                    curves: bool = False):
    """The finished runs of a store as the runs table the scaling-law fitter takes: one row per
    run (final validation loss), or with ``curves`` one row per training step (learning curves)."""
    from polyformer.scaling.runs import runs_from_records

    with RunStore(path, create=False) as store:
        records = store.curve_records(sweep, params) if curves else store.records(sweep=sweep, params=params)
    if not records:
        where = f" of sweep {sweep!r}" if sweep else ""
        raise DataError(f"run store {str(path)!r} has no finished runs{where}; run `polyformer scaling sweep` first")
    return runs_from_records(records, source=str(path))
