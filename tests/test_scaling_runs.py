"""Reading runs: formats, column aliases, derived columns, and clear errors for bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from polyformer.errors import DataError
from polyformer.scaling.runs import read_runs, runs_from_frame, runs_from_records


def _frame():
    n = np.array([1e8, 2e8, 4e8, 8e8])
    d = np.array([2e9, 4e9, 8e9, 1.6e10])
    return pd.DataFrame({"params": n, "tokens": d, "loss": [3.1, 2.9, 2.7, 2.5]})


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl", ".json"])
def test_formats_read_the_same_table(tmp_path, suffix):
    frame = _frame()
    path = tmp_path / f"runs{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        path.write_text(json.dumps(frame.to_dict(orient="records")))
    runs = read_runs(path)
    assert runs.columns == ("N", "D", "C", "loss")
    np.testing.assert_allclose(runs.values("N"), frame["params"])
    np.testing.assert_allclose(runs.values("C"), 6 * frame["params"] * frame["tokens"])
    assert runs.notes == ["C (training FLOPs) was not given: derived as 6 N D"]


def test_epoch_column_names_and_derived_tokens():
    frame = pd.DataFrame({"x": [1, 2, 3], "Model Size": [1e8, 2e8, 3e8], "Training FLOP": [6e18, 6e18, 6e18],
                          "hex_color": ["#fff"] * 3, "loss": [3.0, 2.9, 3.1]})
    runs = runs_from_frame(frame)
    np.testing.assert_allclose(runs.values("D"), 6e18 / (6 * frame["Model Size"]))
    assert runs.notes == ["D (training tokens) was not given: derived as C / (6 N)"]


def test_records_and_learning_curve_columns():
    records = [{"run_id": r, "n_params": 1e8 * (r + 1), "Step": s, "train_flops": 1e15 * s, "val_loss": 4.0 / s}
               for r in range(2) for s in (1, 2, 4)]
    runs = runs_from_records(records)
    assert runs.columns == ("run", "N", "D", "C", "step", "loss")
    assert list(runs.frame["run"].unique()) == ["0", "1"]


def test_drop_highest_loss():
    runs = runs_from_frame(_frame()).drop_highest_loss(1)
    assert len(runs) == 3 and runs.values("loss").max() == pytest.approx(2.9)
    assert "dropped the 1 highest-loss rows" in runs.notes


@pytest.mark.parametrize("column,value,message", [
    ("loss", np.nan, "missing/NaN"),
    ("params", 0.0, "must be positive"),
    ("tokens", -5.0, "must be positive"),
    ("loss", "abc", "non-numeric"),
    ("loss", np.inf, "infinite"),
])
def test_bad_values_name_the_column(column, value, message):
    frame = _frame().astype(object)
    frame.loc[2, column] = value
    with pytest.raises(DataError, match=message) as info:
        runs_from_frame(frame)
    assert repr(column) in str(info.value) and "row 2" in str(info.value)


def test_missing_columns_list_what_was_found():
    with pytest.raises(DataError, match=r"no loss column; found columns params, tokens, perplexity") as info:
        runs_from_frame(pd.DataFrame({"params": [1.0, 2.0], "tokens": [1.0, 2.0], "perplexity": [3.0, 4.0]}))
    assert "final_loss" in str(info.value)  # the accepted aliases are listed too
    runs = runs_from_frame(pd.DataFrame({"params": [1.0, 2.0], "loss": [3.0, 2.0]}))
    with pytest.raises(DataError, match=r"needs column\(s\) D but found only N, loss"):
        runs.require(["N", "D"], purpose="the chinchilla law")


def test_single_run_duplicate_and_empty_tables():
    with pytest.raises(DataError, match="single run"):
        runs_from_frame(pd.DataFrame({"N": [1e8], "D": [1e9], "loss": [3.0]}))
    with pytest.raises(DataError, match="single run"):
        runs_from_frame(pd.DataFrame({"run": ["a", "a"], "N": [1e8, 1e8], "step": [1, 2], "loss": [3.0, 2.0]}))
    with pytest.raises(DataError, match="both name N"):
        runs_from_frame(pd.DataFrame({"N": [1.0, 2.0], "params": [1.0, 2.0], "loss": [1.0, 2.0]}))
    with pytest.raises(DataError, match="no rows"):
        runs_from_frame(pd.DataFrame({"N": [], "loss": []}))


def test_files_that_are_not_tables(tmp_path):
    binary = tmp_path / "runs.parquet"
    binary.write_bytes(b"\x00\x01not parquet at all")
    with pytest.raises(DataError, match="not a readable table"):
        read_runs(binary)
    prose = tmp_path / "notes.csv"
    prose.write_text("These are my notes about training.\nNothing tabular here.\n")
    with pytest.raises(DataError, match="no loss column"):
        read_runs(prose)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="not a readable table"):
        read_runs(empty)
    bad_json = tmp_path / "runs.json"
    bad_json.write_text("{not json")
    with pytest.raises(DataError, match="not a readable table"):
        read_runs(bad_json)
    with pytest.raises(DataError, match="does not exist"):
        read_runs(tmp_path / "missing.csv")
