"""The fitting objective and optimisers against references: torch's Huber loss, autograd, loops, scipy."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from polyformer.scaling.laws import ChinchillaLaw, KaplanLaw, PowerLaw
from polyformer.scaling.lbfgs import minimize_batched
from polyformer.scaling.newton import newton_polish
from polyformer.scaling.objective import HuberObjective, huber



@pytest.fixture(autouse=True)
def _float64():
    """This module builds tensors from Python floats: make them float64, then restore the default."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _data(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    log_n = torch.empty(n).uniform_(math.log(1e7), math.log(1e10), generator=g)
    log_d = torch.empty(n).uniform_(math.log(1e8), math.log(1e11), generator=g)
    law = ChinchillaLaw(E=1.8, A=480.0, B=2000.0, alpha=0.35, beta=0.37)
    loss = torch.from_numpy(law.predict(N=log_n.exp().numpy(), D=log_d.exp().numpy()))
    loss = loss * torch.exp(0.01 * torch.randn(n, generator=g))
    return {"N": log_n, "D": log_d}, loss.log()


def test_huber_matches_torch():
    r = torch.linspace(-0.01, 0.01, 201)
    for delta in (1e-3, 5e-3):
        torch.testing.assert_close(huber(r, delta), torch.nn.functional.huber_loss(r, torch.zeros_like(r), reduction="none", delta=delta))


def _naive_objective(law, theta, logx, log_loss, delta, weights=None):
    """A loop over starts and runs: sum_i w_i huber(log L_pred - log L_i)."""
    out = []
    for t in theta:
        total = 0.0
        pred = law.log_predict_theta(t[None, :], logx)[0]
        for i in range(len(log_loss)):
            r = float(pred[i] - log_loss[i])
            h = 0.5 * r * r if abs(r) <= delta else delta * (abs(r) - 0.5 * delta)
            total += h * (1.0 if weights is None else float(weights[i]))
        out.append(total)
    return torch.tensor(out)


@pytest.mark.parametrize("weighted", [False, True])
def test_closed_form_gradient_matches_autograd_and_loop(weighted):
    logx, log_loss = _data()
    law = ChinchillaLaw()
    theta = torch.tensor([[6.0, 7.5, 0.6, 0.35, 0.37], [5.0, 9.0, 0.0, 0.5, 0.2], [10.0, 0.0, -1.0, 1.0, 0.0],
                          [0.0, 25.0, 1.0, 2.0, 1.5]] * 70)  # 280 rows: more than one evaluation block
    weights = torch.from_numpy(np.random.default_rng(1).multinomial(60, np.full(60, 1 / 60))).double() if weighted else None
    objective = HuberObjective(law, logx, log_loss, delta=1e-3, weights=weights)
    assert objective.features is not None
    f, g = objective.value_and_grad(theta)
    f_auto, g_auto = objective._autograd(theta, None)
    torch.testing.assert_close(f, f_auto, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(g, g_auto, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(objective.value(theta), f, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(f[:4], _naive_objective(law, theta[:4], logx, log_loss, 1e-3, weights), rtol=1e-12, atol=1e-15)


def test_weights_equal_duplicated_runs():
    logx, log_loss = _data(n=20)
    counts = torch.tensor([0, 1, 2, 3, 1, 0, 2, 1, 1, 1, 0, 4, 1, 1, 0, 1, 0, 0, 1, 0], dtype=torch.float64)
    rows = torch.repeat_interleave(torch.arange(20), counts.long())
    theta = torch.tensor([[6.0, 7.5, 0.6, 0.35, 0.37]])
    weighted = HuberObjective(ChinchillaLaw(), logx, log_loss, weights=counts).value_and_grad(theta)
    resampled = HuberObjective(ChinchillaLaw(), {k: v[rows] for k, v in logx.items()}, log_loss[rows]).value_and_grad(theta)
    for a, b in zip(weighted, resampled):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_hessian_matches_finite_differences_of_gradient():
    logx, log_loss = _data()
    objective = HuberObjective(ChinchillaLaw(), logx, log_loss, delta=0.5)  # quadratic regime: smooth
    theta = torch.tensor([6.0, 7.5, 0.6, 0.35, 0.37])
    h = 1e-6
    fd = torch.stack([
        (objective.value_and_grad((theta + h * e)[None])[1][0] - objective.value_and_grad((theta - h * e)[None])[1][0]) / (2 * h)
        for e in torch.eye(5)
    ])
    torch.testing.assert_close(objective.hessian(theta), fd, rtol=1e-5, atol=1e-6)


def test_batched_lbfgs_matches_scipy_on_rosenbrock():
    def rosen(x, _groups=None):
        a, b = x[:, 0], x[:, 1]
        f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
        g = torch.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], dim=-1)
        return f, g

    starts = torch.tensor([[-1.2, 1.0], [0.0, 0.0], [2.0, 2.0], [-0.5, 3.0]])
    result = minimize_batched(rosen, starts, gtol=1e-10, max_iter=2000)
    assert bool(result.converged.all())
    torch.testing.assert_close(result.x, torch.ones(4, 2), atol=1e-8, rtol=0)
    def fun(v):
        f, g = rosen(torch.tensor(v)[None])
        return float(f[0]), g[0].numpy()

    reference = minimize(fun, [-1.2, 1.0], jac=True, method="L-BFGS-B", options={"ftol": 0, "gtol": 1e-10})
    np.testing.assert_allclose(result.x[0].numpy(), reference.x, atol=1e-6)


def test_batched_lbfgs_groups_select_objectives():
    # start s minimises (x - c_g)^2 with c_g picked by its group
    centres = torch.tensor([[1.0, -2.0], [3.0, 0.5]])

    def fun(x, groups):
        c = centres[groups]
        return ((x - c) ** 2).sum(-1), 2 * (x - c)

    groups = torch.tensor([0, 1, 1, 0])
    result = minimize_batched(fun, torch.zeros(4, 2), groups, gtol=1e-12)
    torch.testing.assert_close(result.x, centres[groups], atol=1e-10, rtol=0)


def test_newton_polish_reaches_scipy_optimum_of_smooth_fit():
    logx, log_loss = _data()
    objective = HuberObjective(KaplanLaw(), logx, log_loss, delta=1.0)  # autograd path, least-squares regime
    assert objective.features is None
    start = torch.tensor([30.0, 30.0, 0.1, 0.1])
    polished = newton_polish(objective, start, gtol=1e-12)
    assert polished.grad_norm <= 1e-12

    def fun(v):
        f, g = objective.value_and_grad(torch.tensor(v)[None])
        return float(f[0]), g[0].numpy()

    reference = minimize(fun, start.numpy(), jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 10000})
    assert polished.f <= reference.fun + 1e-15
    np.testing.assert_allclose(polished.theta.numpy(), reference.x, rtol=1e-4)


def test_power_law_fast_path_with_constant_term():
    logx = {"C": torch.linspace(40.0, 50.0, 30)}
    law = PowerLaw(variable="C", E=2.0, X0=1e15, alpha=0.05)
    log_loss = torch.from_numpy(np.log(law.predict(C=np.exp(logx["C"].numpy()))))
    objective = HuberObjective(law, logx, log_loss)
    assert [constant for _, constant in objective.features] == [False, True]
    theta = torch.tensor([[1.0, 0.1, 0.5], [2.0, 0.05, 0.7]])
    f, g = objective.value_and_grad(theta)
    f2, g2 = objective._autograd(theta, None)
    torch.testing.assert_close(f, f2)
    torch.testing.assert_close(g, g2)
    # the true parameters give a zero objective
    assert float(objective.value(torch.tensor(law.theta())[None])[0]) < 1e-28
