"""Chinchilla's three approaches recover the allocation exponents of a known law."""

import numpy as np
import pytest

from polyformer.errors import DataError
from polyformer.scaling import envelope_approach, group_by_budget, isoflop_approach, parametric_approach
from polyformer.scaling.laws import ChinchillaLaw
from polyformer.scaling.synthetic import isoflop_runs, training_curves

LAW = ChinchillaLaw(E=1.8, A=480.0, B=2000.0, alpha=0.35, beta=0.37)
A_TRUE = 0.37 / 0.72


def test_group_by_budget_finds_exact_and_noisy_budgets():
    rng = np.random.default_rng(0)
    budgets = np.repeat([1e18, 3e18, 1e19, 6e19], [5, 4, 6, 3])
    groups = group_by_budget(budgets * np.exp(0.02 * rng.standard_normal(len(budgets))), tolerance=0.1)
    assert [len(g) for g in groups] == [5, 4, 6, 3]
    for g, budget in zip(groups, [1e18, 3e18, 1e19, 6e19]):
        assert np.all(budgets[g] == budget)
    assert group_by_budget(np.array([1e18, 1e19, 1e20])) == []


def test_isoflop_approach_recovers_exponent():
    runs = isoflop_runs(LAW, per_budget=11, noise=0.002, seed=0)
    allocation, profiles = isoflop_approach(runs)
    assert len(profiles) == 7
    assert allocation.a == pytest.approx(A_TRUE, abs=0.02)
    assert allocation.a + allocation.b == pytest.approx(1.0)
    for profile in profiles:  # each vertex is near the law's true optimum for that budget
        n_opt, _ = LAW.compute_optimal(profile.budget)
        assert profile.n_opt == pytest.approx(float(n_opt), rel=0.25)


def test_envelope_approach_over_training_curves():
    sizes = np.geomspace(2e7, 5e9, 40)
    runs = training_curves(LAW, sizes, final_tokens=40 * sizes, points=60, noise=0.0)
    allocation = envelope_approach(runs, n_budgets=25)
    assert allocation.a == pytest.approx(A_TRUE, abs=0.02)
    assert allocation.b == pytest.approx(1 - A_TRUE, abs=0.02)
    assert "interpolated 40 training curves" in allocation.notes[0]


def test_envelope_approach_on_final_losses_uses_best_run_per_budget():
    runs = isoflop_runs(LAW, per_budget=15, spread=4.0, noise=0.0)
    allocation = envelope_approach(runs)
    assert allocation.a == pytest.approx(A_TRUE, abs=0.05)
    assert "lowest-loss run" in allocation.notes[0]


def test_parametric_approach_is_the_closed_form():
    allocation = parametric_approach(LAW)
    assert allocation.a == pytest.approx(A_TRUE)
    np.testing.assert_allclose(allocation.n_opt_at(allocation.budgets), allocation.n_opt, rtol=1e-9)
    np.testing.assert_allclose(allocation.d_opt_at(allocation.budgets), allocation.d_opt, rtol=1e-9)


def test_runs_without_budget_groups_are_a_clear_error():
    with pytest.raises(DataError, match="usable FLOP budget group"):
        isoflop_approach(isoflop_runs(LAW, budgets=(1e19,)))
