"""Predictions with intervals, held-out largest runs, and learning-curve extrapolation."""

import numpy as np
import pandas as pd
import pytest

from polyformer.errors import ConfigError, DataError
from polyformer.scaling import FitOptions, extrapolate_learning_curves, fit_law, holdout_largest, predict_loss
from polyformer.scaling.laws import ChinchillaLaw, PowerLaw
from polyformer.scaling.runs import runs_from_frame
from polyformer.scaling.synthetic import sample_runs

LAW = ChinchillaLaw(E=1.8, A=480.0, B=2000.0, alpha=0.35, beta=0.37)
GRID = {"a": (0.0, 10.0, 20.0), "b": (0.0, 10.0, 20.0), "e": (-1.0, 0.0, 1.0), "alpha": (0.0, 1.0, 2.0), "beta": (0.0, 1.0, 2.0)}


@pytest.fixture(scope="module")
def fit():
    return fit_law(sample_runs(LAW, 120, noise=0.01, seed=4), "chinchilla", FitOptions(grid=GRID), bootstrap=100, seed=1)


def test_prediction_interval_covers_the_truth_and_reproduces_the_bootstrap(fit):
    pred = predict_loss(fit, N=7e10, D=1.4e12)  # far beyond the runs: extrapolation
    assert pred.interval[0] < pred.loss < pred.interval[1]
    assert pred.interval[0] <= float(LAW.predict(N=7e10, D=1.4e12)) <= pred.interval[1]
    samples = [float(law.predict(N=7e10, D=1.4e12)) for law in fit.bootstrap.laws(fit.law)]
    assert pred.interval == pytest.approx(tuple(np.percentile(samples, [2.5, 97.5])))
    assert predict_loss(fit.law, N=7e10, D=1.4e12).interval is None


def test_prediction_from_compute_alone_is_compute_optimal(fit):
    pred = predict_loss(fit, C=1e23)
    n_opt, d_opt = fit.law.compute_optimal(1e23)
    assert pred.inputs == pytest.approx({"N": float(n_opt), "D": float(d_opt)})
    assert "compute-optimal" in pred.note
    with_n = predict_loss(fit, C=1e23, N=1e10)
    assert with_n.inputs["D"] == pytest.approx(1e23 / 6e10)
    with pytest.raises(ConfigError, match="predicts from N, D"):
        predict_loss(fit, N=1e10)
    with pytest.raises(ConfigError, match="positive"):
        predict_loss(fit, N=-1.0, D=1e10)


def test_holdout_on_exact_law_has_no_error_and_on_noise_reports_it():
    runs = sample_runs(LAW, 60, noise=0.0, seed=0)
    fit = holdout_largest(runs, "chinchilla", FitOptions(grid=GRID), fraction=0.2)
    assert fit.holdout.by == "C" and len(fit.holdout.rows) == 12
    assert fit.goodness.n_points == 48
    assert fit.holdout.max_abs_rel_error < 1e-6
    held = {row["N"] for row in fit.holdout.rows}
    largest = runs.frame.nlargest(12, "C")["N"]
    assert held == set(largest)


def test_learning_curves_end_is_predicted_from_their_first_half():
    frames = []
    for i, (e, x0, alpha) in enumerate([(2.0, 3e2, 0.5), (1.7, 1e3, 0.4), (2.3, 50.0, 0.7)]):
        steps = np.geomspace(10, 20000, 50)
        loss = PowerLaw(variable="step", E=e, X0=x0, alpha=alpha).predict(step=steps)
        frames.append(pd.DataFrame({"run": f"r{i}", "step": steps, "loss": loss * np.exp(0.002 * np.sin(steps))}))
    runs = runs_from_frame(pd.concat(frames))
    results = extrapolate_learning_curves(runs, fit_fraction=0.5)
    assert [r.run for r in results] == ["r0", "r1", "r2"]
    for r in results:
        assert r.fit_until_step == pytest.approx(10000)
        assert abs(r.relative_error) < 0.01
    with pytest.raises(DataError, match="no run has 5 or more points"):
        extrapolate_learning_curves(runs, fit_fraction=0.0007)
