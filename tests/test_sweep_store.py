"""The SQLite run store: runs, curves, records for the fitter, transactions that survive kills."""

import signal
import sqlite3
import subprocess
import sys

import pytest

from _train_helpers import subprocess_env
from polyformer.errors import ConfigError, DataError
from polyformer.scaling.store import RunStore

CONFIG = {"model": {"family": "gpt", "config": {"n_layers": 2}}, "train": {"lr": 1e-3}}


def _add(store, name="a", config=CONFIG, n=(2000, 1500), tokens=10_000):
    return store.add_run("s", name, config, n[0], n[1], tokens, 6.0 * n[1] * tokens, 7.0 * n[1] * tokens)


def test_runs_curves_and_fit_records(tmp_path):
    path = tmp_path / "runs.sqlite"
    with RunStore(path) as store:
        first = _add(store)
        assert _add(store) == first  # the same run registered again
        second = _add(store, "b", n=(4000, 3000), tokens=20_000)
        store.mark_running(first)
        curve = [{"step": 1, "kind": "train", "tokens": 100, "loss": 5.0, "lr": 1e-3},
                 {"step": 2, "kind": "train", "tokens": 200, "loss": 4.5, "lr": 1e-3},
                 {"step": 2, "kind": "eval", "tokens": 200, "loss": 4.6}]
        store.finish_run(first, 4.6, curve, seconds=1.5)
        assert store.run(first).status == "finished" and store.run(second).status == "pending"
    with RunStore(path, create=False) as store:  # reopened: everything was committed
        run = store.run(first)
        assert (run.final_val_loss, run.params, run.params_non_embedding, run.tokens) == (4.6, 2000, 1500, 10_000)
        assert run.config == CONFIG and run.seconds == 1.5 and run.started_at and run.finished_at
        assert [p["loss"] for p in store.curve(first, "train")] == [5.0, 4.5]
        assert store.curve(first) == [{"step": 2, "tokens": 200, "loss": 4.6, "lr": None}]
        assert store.records() == [{"run": "s/a", "N": 1500, "D": 10_000, "C": 6.0 * 1500 * 10_000, "loss": 4.6}]
        assert store.records(params="total")[0]["N"] == 2000
        assert store.sweeps() == ["s"]
        assert store.curve_records() == [
            {"run": "s/a", "N": 1500, "D": 100, "C": 6.0 * 1500 * 100, "step": 1, "loss": 5.0},
            {"run": "s/a", "N": 1500, "D": 200, "C": 6.0 * 1500 * 200, "step": 2, "loss": 4.5}]


def test_same_name_with_another_config_is_refused(tmp_path):
    with RunStore(tmp_path / "r.sqlite") as store:
        _add(store)
        with pytest.raises(ConfigError, match="another config"):
            _add(store, config={**CONFIG, "train": {"lr": 2e-3}})
        # the same model and training config with the data folder moved is the same run
        assert _add(store, config={**CONFIG, "data": "/elsewhere"}) == _add(store)
        with pytest.raises(ConfigError, match="params must be one of"):
            store.records(params="all")


def test_a_failed_write_leaves_the_run_as_it_was(tmp_path):
    with RunStore(tmp_path / "r.sqlite") as store:
        run = _add(store)
        store.mark_running(run)
        bad_curve = [{"step": 1, "kind": "train", "tokens": 1, "loss": 1.0},
                     {"step": 2, "kind": "bogus", "tokens": 2, "loss": 1.0}]  # violates the CHECK
        with pytest.raises(sqlite3.IntegrityError):
            store.finish_run(run, 1.0, bad_curve, 1.0)
        assert store.run(run).status == "running" and store.curve(run, "train") == []


KILLED_WRITER = """
import os, signal, sys
from polyformer.scaling.store import RunStore
store = RunStore(sys.argv[1])
store._db.execute("BEGIN IMMEDIATE")
store._db.execute("UPDATE runs SET status = 'finished', final_val_loss = 1.0")
store._db.execute("INSERT INTO curve VALUES (1, 1, 'eval', 10, 1.0, NULL)")
os.kill(os.getpid(), signal.SIGKILL)  # killed before COMMIT
"""


def test_a_process_killed_mid_transaction_leaves_the_store_intact(tmp_path):
    path = tmp_path / "r.sqlite"
    with RunStore(path) as store:
        run = _add(store)
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], env=subprocess_env(), timeout=60)
    assert done.returncode == -signal.SIGKILL
    with RunStore(path) as store:
        assert store.run(run).status == "pending" and store.curve(run) == []
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_bad_store_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match="not a polyformer run store"):
        RunStore(junk)
    with pytest.raises(DataError, match="does not exist"):
        RunStore(tmp_path / "missing.sqlite", create=False)
    with pytest.raises(DataError, match="is a folder"):
        RunStore(tmp_path)
    assert not (tmp_path / "missing.sqlite").exists()
