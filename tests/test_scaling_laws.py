"""Laws: predictions match the written formulas; theta, log-sum-exp and JSON forms agree."""

import json
import math

import numpy as np
import pytest
import torch

from polyformer.errors import ConfigError, DataError
from polyformer.scaling.laws import (
    ChinchillaLaw, KaplanCurveLaw, KaplanLaw, PowerLaw, PurePowerLaw, law_from_dict, list_laws, make_law, theta_grid,
)
from polyformer.scaling.planning import allocation_exponents, compute_optimal, numeric_compute_optimal

rng = np.random.default_rng(0)
N = np.exp(rng.uniform(math.log(1e6), math.log(1e11), 50))
D = np.exp(rng.uniform(math.log(1e8), math.log(1e12), 50))
S = np.exp(rng.uniform(math.log(10), math.log(1e5), 50))

LAWS = [
    (ChinchillaLaw(E=1.7, A=400.0, B=410.0, alpha=0.34, beta=0.28),
     {"N": N, "D": D}, lambda: 1.7 + 400.0 / N**0.34 + 410.0 / D**0.28),
    (KaplanLaw(N_c=6.4e13, D_c=1.8e13, alpha_N=0.076, alpha_D=0.103),
     {"N": N, "D": D}, lambda: ((6.4e13 / N) ** (0.076 / 0.103) + 1.8e13 / D) ** 0.103),
    (KaplanCurveLaw(N_c=6.5e13, S_c=2.1e3, alpha_N=0.076, alpha_S=0.76),
     {"N": N, "step": S}, lambda: (6.5e13 / N) ** 0.076 + (2.1e3 / S) ** 0.76),
    (PowerLaw(variable="N", E=1.5, X0=1e5, alpha=0.3), {"N": N}, lambda: 1.5 + (1e5 / N) ** 0.3),
    (PurePowerLaw(variable="D", X0=5e13, alpha=0.095), {"D": D}, lambda: (5e13 / D) ** 0.095),
]
IDS = [law.name for law, _, _ in LAWS]


def test_every_law_is_registered():
    assert set(list_laws()) == {"chinchilla", "kaplan", "kaplan-curve", "power", "pure-power"}


@pytest.mark.parametrize("law,inputs,formula", LAWS, ids=IDS)
def test_predict_matches_formula(law, inputs, formula):
    np.testing.assert_allclose(law.predict(**inputs), formula(), rtol=1e-12)


@pytest.mark.parametrize("law,inputs,formula", LAWS, ids=IDS)
def test_theta_round_trip_and_log_predict(law, inputs, formula):
    theta = law.theta()
    again = law.with_theta(theta)
    for name, value in law.parameters().items():
        assert again.parameters()[name] == pytest.approx(value, rel=1e-12)
    logx = {k: torch.tensor(np.log(v)) for k, v in inputs.items()}
    log_pred = law.log_predict_theta(torch.tensor(theta)[None, :], logx)[0].numpy()
    np.testing.assert_allclose(log_pred, np.log(formula()), rtol=1e-12, atol=1e-12)
    features = law.lse_features(logx)
    if features is not None:  # the fast fitting path: log L = logsumexp_k(theta @ M_k)
        terms = torch.stack([torch.tensor(theta) @ m for m in features])
        np.testing.assert_allclose(torch.logsumexp(terms, 0).numpy(), log_pred, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("law,inputs,formula", LAWS, ids=IDS)
def test_json_round_trip(law, inputs, formula):
    text = json.dumps(law.to_dict())
    again = law_from_dict(json.loads(text))
    assert again == law
    np.testing.assert_allclose(again.predict(**inputs), formula(), rtol=1e-12)


def test_chinchilla_grid_is_hoffmann_grid():
    starts = theta_grid(make_law("chinchilla"))
    assert starts.shape == (4500, 5)
    for i, values in enumerate([np.arange(0, 30, 5), np.arange(0, 30, 5), np.arange(-1, 1.5, 0.5),
                                np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5)]):
        np.testing.assert_allclose(np.unique(starts[:, i].numpy()), values)


def test_bad_law_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="known laws"):
        make_law("nope")
    with pytest.raises(ConfigError, match="valid options: variable"):
        make_law("power", colour="red")
    with pytest.raises(ConfigError, match="variable must be one of"):
        make_law("power", variable="Q")
    with pytest.raises(ConfigError, match="lacks parameter"):
        law_from_dict({"law": "chinchilla", "E": 1.0})
    with pytest.raises(ConfigError, match="finite number"):
        law_from_dict({"law": "pure-power", "variable": "C", "X0": "big", "alpha": 0.1})
    with pytest.raises(ConfigError, match="no parameter values"):
        make_law("chinchilla").predict(N=1e9, D=1e10)
    with pytest.raises(ConfigError, match="missing D"):
        LAWS[0][0].predict(N=1e9)
    with pytest.raises(DataError, match="positive"):
        LAWS[0][0].predict(N=-1.0, D=1e10)
    with pytest.raises(ConfigError, match="grid names"):
        theta_grid(make_law("chinchilla"), {"gamma": [1.0]})


@pytest.mark.parametrize("law", [LAWS[0][0], LAWS[1][0], ChinchillaLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)])
@pytest.mark.parametrize("flops", [1e19, 3.14e23, 1e26])
def test_closed_form_optimum_matches_numeric_minimum(law, flops):
    n_closed, d_closed, method = compute_optimal(law, flops)
    assert method == "closed form"
    n_num, d_num = numeric_compute_optimal(law, flops)
    assert n_closed == pytest.approx(n_num, rel=1e-5)
    assert n_closed * d_closed * 6 == pytest.approx(flops, rel=1e-12)
    # Brute force: no size on a fine grid around the optimum beats it.
    sizes = n_closed * np.exp(np.linspace(-0.5, 0.5, 2001))
    losses = law.predict(N=sizes, D=flops / (6 * sizes))
    assert law.predict(N=n_closed, D=d_closed) <= losses.min() + 1e-12


def test_allocation_exponents_closed_forms():
    chin = ChinchillaLaw(E=1.8, A=480.0, B=2085.0, alpha=0.35, beta=0.37)
    assert allocation_exponents(chin) == pytest.approx((0.37 / 0.72, 0.35 / 0.72))
    kap = KaplanLaw(N_c=6.4e13, D_c=1.8e13, alpha_N=0.076, alpha_D=0.103)
    a, b = allocation_exponents(kap)
    assert a == pytest.approx(0.103 / 0.179)
    # slope of the numeric optimum between two budgets agrees with the closed form
    n1, _ = numeric_compute_optimal(kap, 1e20)
    n2, _ = numeric_compute_optimal(kap, 1e24)
    assert math.log(n2 / n1) / math.log(1e4) == pytest.approx(a, abs=1e-5)
    assert allocation_exponents(PowerLaw(variable="C", E=1.0, X0=1e8, alpha=0.05)) is None
    with pytest.raises(ConfigError, match="cannot split compute"):
        compute_optimal(PowerLaw(variable="C", E=1.0, X0=1e8, alpha=0.05), 1e20)
