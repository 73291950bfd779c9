"""Fit a scaling law: summed Huber loss of log residuals, L-BFGS from a grid of starts, polished.

1. Every start of the initialisation grid (Chinchilla's 4,500 by default) runs batched L-BFGS
   (:mod:`polyformer.scaling.lbfgs`) until its gradient is below ``gtol``.
2. The best few *distinct* local minima (those within 25% of the best objective) are polished
   by Newton's method (:mod:`polyformer.scaling.newton`) to a much tighter gradient tolerance.
   Besiroglu et al. (2024) attribute part of the mismatch of Hoffmann et al.'s published fit to
   an optimiser that stopped early; this one stops on the gradient.
3. The result reports the final gradient norm, whether it met the tolerance, how well the law
   fits, and warnings where the data cannot identify the parameters.

Gradient tolerances are relative: the largest gradient component of the summed objective is
compared with ``tol * delta * (number of runs)``, the scale of that gradient far from a minimum.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from polyformer.errors import ConfigError, DataError
from polyformer.scaling.bootstrap import bootstrap_fit
from polyformer.scaling.diagnostics import data_warnings, fit_warnings, goodness_of_fit
from polyformer.scaling.fit_options import COMPETING, FitOptions
from polyformer.scaling.laws import ScalingLaw, grid_bounds, make_law, theta_grid
from polyformer.scaling.lbfgs import BatchedResult, minimize_batched
from polyformer.scaling.newton import newton_polish
from polyformer.scaling.objective import HuberObjective, log_data
from polyformer.scaling.parallel import map_threads, shards
from polyformer.scaling.result import ScalingFit
from polyformer.scaling.runs import Runs, runs_from_frame


def as_runs(data: Runs | Any) -> Runs:
    """Accept a :class:`Runs` or a pandas DataFrame (normalised through ``runs_from_frame``)."""
    return data if isinstance(data, Runs) else runs_from_frame(data, source="data frame")


def resolve_law(law: ScalingLaw | str, **context: Any) -> ScalingLaw:
    """A law instance from a name (with its context options) or an instance (used as is)."""
    if isinstance(law, str):
        return make_law(law, **context)
    if context:
        raise ConfigError("law options are only accepted with a law name; pass them to the law instead")
    return law


def distinct_minima(x: torch.Tensor, f: torch.Tensor, limit: int, tol: float = 1e-3) -> list[int]:
    """Indices of up to ``limit`` best rows whose parameters differ from every better one."""
    kept: list[int] = []
    for i in torch.argsort(f).tolist():
        if not math.isfinite(float(f[i])):
            break
        if all(float((x[i] - x[j]).abs().max()) > tol * (1.0 + float(x[j].abs().max())) for j in kept):
            kept.append(i)
            if len(kept) == limit:
                break
    return kept


def fit_law(
    data: Runs | Any,
    law: ScalingLaw | str = "chinchilla",
    options: FitOptions | None = None,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    **law_context: Any,
) -> ScalingFit:
    """Fit ``law`` to runs (a :class:`Runs` or a DataFrame with N/D/C/loss columns).

    ``law`` is a name from :func:`polyformer.scaling.laws.list_laws` (``law_context`` holds its
    options, e.g. ``variable="C"`` for ``"power"``) or an unfitted law instance. With
    ``bootstrap > 0`` the fit also carries bootstrap intervals (see :mod:`.bootstrap`).
    """
    started = time.perf_counter()
    options = options or FitOptions()
    runs = as_runs(data)
    law = resolve_law(law, **law_context)
    logx, log_loss = log_data(law, runs)
    objective = HuberObjective(law, logx, log_loss, delta=options.delta)
    scale = options.delta * len(runs)

    starts = theta_grid(law, options.grid)

    def run(part: slice) -> BatchedResult:
        return minimize_batched(
            objective.value_and_grad, starts[part], gtol=options.gtol * scale,
            max_iter=options.max_iter, history=options.history,
            progress=options.progress and part.start == 0, desc=f"fitting {law.name} ({len(starts)} starts)",
        )

    batched = BatchedResult.concatenate(map_threads(run, shards(len(starts), options.n_workers), options.n_workers))
    candidates = distinct_minima(batched.x, batched.f, options.polish)
    if not candidates:
        raise DataError(f"no start of the {law.name!r} fit reached a finite objective: the law cannot describe these runs")
    tolerance = options.polish_gtol * scale
    # Minima far above the best cannot overtake it: polishing only moves a converged start by
    # ~grad^2/curvature. They are reported as the batched phase left them.
    best_f = float(batched.f[candidates[0]])
    competing = [i for i in candidates if float(batched.f[i]) <= COMPETING * best_f]
    polished = map_threads(lambda i: newton_polish(objective, batched.x[i], tolerance), competing, options.n_workers)
    polished.sort(key=lambda p: p.f)
    best = polished[0]
    others = [(float(batched.f[i]), [float(v) for v in batched.x[i]]) for i in candidates if i not in competing]
    best_theta, grad_norm = best.theta.numpy(), best.grad_norm
    fitted = law.with_theta(best_theta)
    converged = grad_norm <= tolerance

    warnings = data_warnings(law, runs) + fit_warnings(fitted, best_theta, runs, grid_bounds(law, options.grid))
    if not converged:
        warnings.append(
            f"the optimiser stopped with gradient norm {grad_norm:.3g} above the tolerance {tolerance:.3g}: "
            "the optimum may be imprecise"
        )
    result = ScalingFit(
        law=fitted,
        objective=best.f,
        delta=options.delta,
        grad_norm=grad_norm,
        gradient_tolerance=tolerance,
        converged=converged,
        n_starts=len(starts),
        n_starts_converged=int(batched.converged.sum()),
        local_minima=[(p.f, [float(v) for v in p.theta]) for p in polished] + others,
        goodness=goodness_of_fit(fitted, runs),
        warnings=warnings,
        notes=list(runs.notes),
        seconds=time.perf_counter() - started,
    )
    if bootstrap:
        result = bootstrap_fit(result, runs, n=bootstrap, seed=seed, level=level, options=options)
    return result
