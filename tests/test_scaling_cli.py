"""The `polyformer scaling` command: JSON output, saved fits, plans, costs, and errors that write nothing."""

import json

import numpy as np
import pandas as pd
import pytest

from polyformer.cli import main
from polyformer.scaling.laws import ChinchillaLaw, PowerLaw
from polyformer.scaling.synthetic import isoflop_runs, sample_runs

LAW = ChinchillaLaw(E=1.8, A=480.0, B=2000.0, alpha=0.35, beta=0.37)
SMALL_GRID = ["--grid", "a=0,10,20", "--grid", "b=0,10,20", "--grid", "e=-1,0,1",
              "--grid", "alpha=0,1,2", "--grid", "beta=0,1,2"]


@pytest.fixture(scope="module")
def runs_csv(tmp_path_factory):
    runs = isoflop_runs(LAW, per_budget=9, noise=0.005, seed=0)
    path = tmp_path_factory.mktemp("runs") / "runs.csv"
    runs.frame.rename(columns={"N": "params", "D": "tokens", "C": "flops"}).to_csv(path, index=False)
    return path


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_fit_json_then_predict_and_plan(runs_csv, tmp_path, capsys):
    out, plot = tmp_path / "fit.json", tmp_path / "fit.png"
    code = main(["scaling", "fit", str(runs_csv), "--law", "chinchilla", "--bootstrap", "50", *SMALL_GRID,
                 "--out", str(out), "--plot", str(plot), "--json"])
    assert code == 0
    result = _json(capsys)
    for key in ("E", "A", "B", "alpha", "beta"):
        assert result[key] == pytest.approx(LAW.parameters()[key], rel=0.1)
        low, high = result["intervals"][key]
        assert low <= result[key] <= high
        assert result["standard_errors"][key] > 0
    assert result["fit"]["converged"] is True
    assert "samples" not in result["bootstrap"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(out.read_text())
    assert len(saved["bootstrap"]["samples"]["E"]) == 50

    assert main(["scaling", "predict", str(out), "--params", "70B", "--tokens", "1.4T", "--json"]) == 0
    prediction = _json(capsys)
    expected = ChinchillaLaw(**{k: result[k] for k in ("E", "A", "B", "alpha", "beta")}).predict(N=70e9, D=1.4e12)
    assert prediction["loss"] == pytest.approx(float(expected))
    assert prediction["interval"][0] < prediction["loss"] < prediction["interval"][1]

    assert main(["scaling", "plan", "--flops", "1e21", "1e23", "--fit", str(out), "--json"]) == 0
    plans = _json(capsys)["plans"]
    assert [p["flops"] for p in plans] == [1e21, 1e23]
    assert all(p["interval"]["N"][0] < p["N"] < p["interval"]["N"][1] for p in plans)

    assert main(["scaling", "predict", str(out), "--flops", "1e23"]) == 0
    assert "compute-optimal allocation" in capsys.readouterr().out


def test_fit_text_with_holdout(runs_csv, capsys):
    assert main(["scaling", "fit", str(runs_csv), *SMALL_GRID, "--holdout", "largest", "--holdout-fraction", "0.15"]) == 0
    text = capsys.readouterr().out
    assert "held out 9 runs with C >= 1e+21" in text
    assert "note: fitted without the 9 runs" in text


def test_single_variable_law(tmp_path, capsys):
    path = tmp_path / "runs.jsonl"
    sample_runs(PowerLaw(variable="C", E=2.0, X0=1e19, alpha=0.3), 40, noise=0.0).frame.to_json(path, orient="records", lines=True)
    assert main(["scaling", "fit", str(path), "--law", "power", "--variable", "C", "--json"]) == 0
    result = _json(capsys)
    assert result["law"] == "power" and result["variable"] == "C"
    assert result["alpha"] == pytest.approx(0.3, rel=1e-6)
    assert "allocation" not in result


def test_plan_and_cost_without_fit(capsys):
    assert main(["scaling", "plan", "--flops", "3.14e23"]) == 0
    assert "Besiroglu" in capsys.readouterr().out
    assert main(["scaling", "cost", "--params", "175B", "--tokens", "300B", "--gpu-flops", "28e12", "--price", "1.5", "--json"]) == 0
    cost = _json(capsys)
    assert cost["flops"] == pytest.approx(3.15e23)
    assert cost["device_years"] == pytest.approx(356.7, abs=0.1)
    assert cost["cost"] == pytest.approx(4.6875e6)
    assert main(["scaling", "cost", "--flops", "3.14e23", "--gpu-flops", "28e12", "--price", "1.5"]) == 0
    text = capsys.readouterr().out
    assert "355.6 device-years" in text and "4,672,619" in text


def test_approaches_and_curves(runs_csv, tmp_path, capsys):
    assert main(["scaling", "approaches", str(runs_csv), *SMALL_GRID, "--json"]) == 0
    result = _json(capsys)
    for name, tolerance in (("envelope", 0.1), ("isoflop", 0.03), ("parametric", 0.03)):
        # the envelope picks the best of 9 sizes per budget (steps of x1.7 in N): coarse by design
        assert result[name]["a"] == pytest.approx(0.37 / 0.72, abs=tolerance)
    frames = [pd.DataFrame({"run": f"r{i}", "step": np.geomspace(10, 1e4, 40)}) for i in range(2)]
    curves = pd.concat(frames)
    curves["loss"] = 2.0 + (300 / curves["step"]) ** 0.5
    path = tmp_path / "curves.csv"
    curves.to_csv(path, index=False)
    plot = tmp_path / "curves.png"
    assert main(["scaling", "curves", str(path), "--plot", str(plot), "--json"]) == 0
    assert all(abs(r["relative_error"]) < 1e-6 for r in _json(capsys)["runs"])
    assert plot.is_file()


@pytest.mark.parametrize("content,message", [
    ("params,tokens,loss\n1e8,2e9,nan\n2e8,4e9,2.9\n", "NaN"),
    ("params,tokens,loss\n1e8,2e9,0\n2e8,4e9,2.9\n", "must be positive"),
    ("params,tokens,loss\n-1e8,2e9,3\n2e8,4e9,2.9\n", "must be positive"),
    ("params,steps_per_sec\n1e8,2\n2e8,4\n", "found columns params, steps_per_sec"),
    ("params,tokens,loss\n1e8,2e9,3.0\n", "single run"),
    ("\x00\x01\x02binary", "not a readable table"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, content, message):
    path = tmp_path / "runs.csv"
    path.write_text(content)
    out, plot = tmp_path / "fit.json", tmp_path / "fit.png"
    code = main(["scaling", "fit", str(path), "--out", str(out), "--plot", str(plot), "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err and captured.err.startswith("polyformer scaling: error:")
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]


def test_bad_options(tmp_path, capsys):
    assert main(["scaling", "cost", "--params", "1B", "--gpu-flops", "1e12"]) == 2
    assert "give --params and --tokens" in capsys.readouterr().err
    assert main(["scaling", "predict", str(tmp_path / "nope.json"), "--params", "1B", "--tokens", "1T"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["scaling", "cost", "--params", "lots", "--tokens", "1T", "--gpu-flops", "1e12"])
