"""Polish one local minimum to round-off: Newton steps with a line search on the slope.

Near the optimum of the summed Huber objective the function changes by ~1e-12 of its value
over the last digits of the parameters, below what comparing objective values can resolve;
scipy's L-BFGS-B stops there with gradients ~1e-8 of their scale. The gradient itself is still
accurate to ~1e-15, so this polish searches along each Newton direction for a zero of the
directional derivative (bracket, then bisect) instead of for a decrease of the objective.
The Hessian comes from autograd; negative or tiny eigenvalues are replaced by their magnitude
(floored), so every direction descends.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from polyformer.scaling.objective import HuberObjective

_MAX_STEP = 1.0  # largest change of any theta component in one step (keeps degenerate fits in place)
_BISECTIONS = 60


@dataclass
class PolishResult:
    """The refined parameters, objective, largest gradient component and Newton iterations."""

    theta: torch.Tensor
    f: float
    grad_norm: float
    n_iter: int


def _slope(objective: HuberObjective, theta: torch.Tensor, direction: torch.Tensor) -> tuple[float, float]:
    f, g = objective.value_and_grad(theta[None, :])
    return float(f[0]), float(g[0] @ direction)


def _line_search(objective: HuberObjective, theta: torch.Tensor, direction: torch.Tensor, slope0: float) -> float:
    """A step t > 0 where the directional derivative crosses zero (or the largest allowed step)."""
    t_max = _MAX_STEP / float(direction.abs().max().clamp_min(1e-300))
    low, high = 0.0, min(1.0, t_max)
    while True:  # expand until the slope turns non-negative
        _, slope = _slope(objective, theta + high * direction, direction)
        if slope >= 0 or high >= t_max:
            break
        low, high = high, min(2.0 * high, t_max)
    if slope < 0:
        return high
    for _ in range(_BISECTIONS):
        mid = 0.5 * (low + high)
        _, slope = _slope(objective, theta + mid * direction, direction)
        if abs(slope) <= 0.1 * abs(slope0):  # strong-Wolfe curvature condition, c2 = 0.1
            return mid
        if slope < 0:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def newton_polish(objective: HuberObjective, theta: torch.Tensor, gtol: float, max_iter: int = 50) -> PolishResult:
    """Refine ``theta`` (P,) until max |gradient| <= ``gtol`` or no step lowers the objective."""
    theta = theta.detach().to(torch.float64).clone()
    f, g = (t[0] for t in objective.value_and_grad(theta[None, :]))
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        if float(g.abs().max()) <= gtol:
            n_iter -= 1
            break
        hessian = objective.hessian(theta)
        if not bool(torch.isfinite(hessian).all()):
            break  # a degenerate point (e.g. an exponent at 0): leave it as the batched phase left it
        try:
            eigenvalues, vectors = torch.linalg.eigh(hessian)
        except torch.linalg.LinAlgError:
            break
        floor = 1e-10 * float(eigenvalues.abs().max().clamp_min(1e-300))
        direction = -(vectors @ ((vectors.T @ g) / eigenvalues.abs().clamp_min(floor)))
        slope0 = float(g @ direction)
        if not slope0 < 0:
            break
        step = _line_search(objective, theta, direction, slope0)
        candidate = theta + step * direction
        f_new, g_new = (t[0] for t in objective.value_and_grad(candidate[None, :]))
        # Accept equal objectives within round-off: the slope is the reliable signal here.
        if not torch.isfinite(f_new) or f_new > f + 1e-13 * abs(float(f)):
            break
        theta, f, g = candidate, f_new, g_new
    return PolishResult(theta=theta, f=float(f), grad_norm=float(g.abs().max()), n_iter=n_iter)
