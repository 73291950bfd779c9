"""Fitting recovers known laws from noisy synthetic runs, reports convergence, warns when it should."""


import numpy as np
import pandas as pd
import pytest
import torch

from polyformer.errors import ConfigError, DataError
from polyformer.scaling import FitOptions, fit_law
from polyformer.scaling.diagnostics import log_residuals
from polyformer.scaling.laws import ChinchillaLaw, KaplanCurveLaw, KaplanLaw, PowerLaw, PurePowerLaw
from polyformer.scaling.objective import huber
from polyformer.scaling.result import ScalingFit
from polyformer.scaling.synthetic import sample_runs

SMALL_GRID = {"a": (0.0, 10.0, 20.0), "b": (0.0, 10.0, 20.0), "e": (-1.0, 0.0, 1.0),
              "alpha": (0.0, 1.0, 2.0), "beta": (0.0, 1.0, 2.0)}

TRUE_LAWS = [
    ChinchillaLaw(E=1.8, A=480.0, B=2000.0, alpha=0.35, beta=0.37),
    PowerLaw(variable="C", E=2.0, X0=1e19, alpha=0.3),
    PurePowerLaw(variable="D", X0=5.4e13, alpha=0.095),
    KaplanLaw(N_c=6.4e13, D_c=1.8e13, alpha_N=0.076, alpha_D=0.103),
    KaplanCurveLaw(N_c=6.5e13, S_c=2.1e3, alpha_N=0.076, alpha_S=0.76),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("true_law", TRUE_LAWS, ids=[law.name for law in TRUE_LAWS])
def test_recovers_parameters_within_the_noise(true_law, seed):
    """1% log-normal noise on 200 runs: every parameter within 4 bootstrap standard errors of the truth."""
    runs = sample_runs(true_law, 200, noise=0.01, seed=seed)
    fit = fit_law(runs, true_law.name, bootstrap=100, seed=seed, **true_law.context())
    assert fit.converged and fit.grad_norm <= fit.gradient_tolerance
    assert fit.warnings == []
    se = fit.bootstrap.standard_errors()
    for name, truth in true_law.parameters().items():
        estimate = fit.law.parameters()[name]
        assert abs(estimate - truth) <= 4 * se[name], (name, estimate, truth, se[name])
    # the noise level is what the residuals show
    assert fit.goodness.rmse_log == pytest.approx(0.01, rel=0.2)


@pytest.mark.parametrize("true_law", TRUE_LAWS, ids=[law.name for law in TRUE_LAWS])
def test_noise_free_runs_are_fitted_exactly(true_law):
    runs = sample_runs(true_law, 60, noise=0.0, seed=3)
    grid = SMALL_GRID if true_law.name == "chinchilla" else None
    fit = fit_law(runs, true_law.name, FitOptions(grid=grid), **true_law.context())
    assert fit.objective < 1e-20
    np.testing.assert_allclose(fit.law.theta(), true_law.theta(), rtol=1e-6, atol=1e-6)


def test_objective_is_the_summed_huber_loss_of_log_residuals():
    runs = sample_runs(TRUE_LAWS[0], 80, noise=0.02, seed=5)
    fit = fit_law(runs, "chinchilla", FitOptions(grid=SMALL_GRID, delta=1e-2))
    residuals = torch.from_numpy(log_residuals(fit.law, runs))
    assert fit.objective == pytest.approx(float(huber(residuals, 1e-2).sum()), rel=1e-10)
    assert fit.delta == 1e-2
    # summed, not averaged: the mean would be 80 times smaller
    assert fit.objective > 10 * float(huber(residuals, 1e-2).mean())


def test_dataframe_input_with_aliases_and_json_round_trip(tmp_path):
    runs = sample_runs(TRUE_LAWS[0], 50, noise=0.01, seed=2)
    frame = pd.DataFrame({"params": runs.values("N"), "tokens": runs.values("D"), "Final Loss": runs.values("loss")})
    fit = fit_law(frame, "chinchilla", FitOptions(grid=SMALL_GRID), bootstrap=20)
    path = tmp_path / "fit.json"
    fit.save(path)
    again = ScalingFit.load(path)
    assert again.law == fit.law
    np.testing.assert_allclose(again.bootstrap.samples, fit.bootstrap.samples)
    assert again.to_dict() == fit.to_dict()


def test_warnings_for_data_that_cannot_identify_the_law():
    law = TRUE_LAWS[0]
    frame = pd.DataFrame({"N": np.full(40, 1e9), "D": np.geomspace(1e9, 3e9, 40)})
    frame["loss"] = law.predict(N=frame["N"].to_numpy(), D=frame["D"].to_numpy())
    fit = fit_law(frame, "chinchilla", FitOptions(grid=SMALL_GRID))
    text = " ".join(fit.warnings)
    assert "all runs have the same N" in text
    assert "D spans only 0.48 decades" in text

    frame = pd.DataFrame({"N": np.geomspace(1e7, 1e10, 30)})
    frame["D"] = 20 * frame["N"]  # tokens move with parameters: N and D effects cannot be told apart
    frame["loss"] = law.predict(N=frame["N"].to_numpy(), D=frame["D"].to_numpy())
    assert any("collinear" in w for w in fit_law(frame, "chinchilla", FitOptions(grid=SMALL_GRID)).warnings)

    few = sample_runs(law, 7, noise=0.01, seed=0)
    assert any("only 7 runs for 5 parameters" in w for w in fit_law(few, "chinchilla", FitOptions(grid=SMALL_GRID)).warnings)


def test_warning_when_fit_leaves_the_grid_or_e_vanishes():
    steep = PurePowerLaw(variable="N", X0=1e6, alpha=3.0)  # exponent beyond the grid's largest (2)
    fit = fit_law(sample_runs(steep, 40, noise=0.0, ranges={"N": (1e6, 1e8)}), "pure-power", variable="N")
    assert fit.law.alpha == pytest.approx(3.0)
    assert any("outside the initialisation grid" in w for w in fit.warnings)

    pure = PurePowerLaw(variable="C", X0=1e12, alpha=0.05)  # no irreducible loss: E is not identified
    fit = fit_law(sample_runs(pure, 60, noise=0.0), "power", variable="C")
    assert any("E" in w and ("~0" in w or "not identified" in w) for w in fit.warnings), fit.warnings


def test_bad_fit_inputs():
    runs = sample_runs(TRUE_LAWS[0], 5, noise=0.01, seed=0)
    with pytest.raises(DataError, match="5 parameters but only 5 runs"):
        fit_law(runs, "chinchilla")
    with pytest.raises(DataError, match="needs column"):
        fit_law(sample_runs(PowerLaw(variable="C", E=1.0, X0=1e18, alpha=0.1), 20), "chinchilla")
    with pytest.raises(ConfigError, match="delta must be"):
        FitOptions(delta=0.0)
    with pytest.raises(ConfigError, match="unknown scaling law"):
        fit_law(runs, "gpt")
