"""Bootstrap confidence intervals: refit on runs resampled with replacement, all refits at once.

Resampling runs with replacement is the same as weighting each run by how often it was drawn,
so every refit is the same summed Huber objective with different weights. All refits run as one
batch of L-BFGS starts: each refit starts from the full-data optimum and from the other distinct
local minima of the full fit whose objective is within 25% of the best (basins a resample could
plausibly prefer), and keeps its best.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from polyformer.options import require
from polyformer.scaling.fit_options import COMPETING, FitOptions
from polyformer.scaling.lbfgs import minimize_batched
from polyformer.scaling.objective import HuberObjective, log_data
from polyformer.scaling.parallel import map_threads
from polyformer.scaling.result import BootstrapResult, ScalingFit
from polyformer.scaling.runs import Runs

_CHUNK = 250  # refits per batch (bounds memory; one progress-bar step each)
_MAX_STARTS = 4  # starts per refit: the full-data optimum and the next-best distinct minima


def resample_weights(n_runs: int, n_samples: int, seed: int) -> np.ndarray:
    """(n_samples, n_runs) counts of each run in each resample (multinomial, sums to n_runs)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_runs, np.full(n_runs, 1.0 / n_runs), size=n_samples).astype(np.float64)


def bootstrap_fit(
    fit: ScalingFit,
    runs: Runs,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    options: FitOptions | None = None,
) -> ScalingFit:
    """``fit`` with a :class:`BootstrapResult` of ``n`` refits attached (and warnings about it)."""
    require(n >= 2, f"bootstrap needs at least 2 resamples, got {n}")
    require(0.0 < level < 1.0, f"interval level must be between 0 and 1, got {level}")
    options = options or FitOptions(delta=fit.delta)
    started = time.perf_counter()
    law = fit.law
    logx, log_loss = log_data(law, runs)
    best_f = fit.local_minima[0][0]
    competing = [theta for f, theta in fit.local_minima if f <= COMPETING * best_f][:_MAX_STARTS]
    starts = torch.tensor(competing, dtype=torch.float64)
    weights = torch.from_numpy(resample_weights(len(runs), n, seed))
    tol = options.gtol * options.delta * len(runs)

    def refit(first: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = weights[first : first + _CHUNK]
        objective = HuberObjective(law, logx, log_loss, delta=options.delta, weights=chunk)
        groups = torch.arange(len(chunk)).repeat_interleave(len(starts))
        result = minimize_batched(
            objective.value_and_grad, starts.repeat(len(chunk), 1), groups,
            gtol=tol, max_iter=options.max_iter, history=options.history,
        )
        best = result.f.reshape(len(chunk), len(starts)).argmin(dim=1)
        rows = torch.arange(len(chunk)) * len(starts) + best
        if bar is not None:
            bar.update(len(chunk))
        return result.x[rows], result.converged[rows]

    bar = tqdm(total=n, desc="bootstrap", leave=False) if options.progress else None
    outcomes = map_threads(refit, list(range(0, n, _CHUNK)), options.n_workers)
    if bar is not None:
        bar.close()
    thetas = [o[0] for o in outcomes]
    converged = [o[1] for o in outcomes]
    theta = torch.cat(thetas).numpy()
    ok = torch.cat(converged).numpy()
    samples = np.array([list(law.with_theta(t).parameters().values()) for t in theta])
    boot = BootstrapResult(
        n=n, seed=seed, level=level, parameter_names=law.parameter_names, samples=samples,
        converged_fraction=float(ok.mean()), seconds=time.perf_counter() - started,
    )
    warnings = []
    if boot.converged_fraction < 0.95:
        warnings.append(f"only {boot.converged_fraction:.0%} of bootstrap refits converged: intervals may be rough")
    for name, se in boot.standard_errors().items():
        value = law.parameters()[name]
        if np.isfinite(se) and value != 0 and se > abs(value):
            warnings.append(
                f"{name} is poorly identified: its bootstrap standard error ({se:.3g}) exceeds its value ({value:.3g})"
            )
    return fit.with_bootstrap(boot, warnings)
