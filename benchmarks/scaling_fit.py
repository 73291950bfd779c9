"""Benchmark: the full-grid Chinchilla fit and 1000 bootstrap refits, against a per-start scipy loop.

Targets: the 4,500-start fit of Epoch AI's 240 digitised runs in <= 10 s, and 1000
bootstrap refits in <= 120 s, on 2 cores. The baseline, measured in the same run, is what the
published replications do: scipy's L-BFGS-B from each grid start in turn (numpy objective with an
analytic gradient); its time for the full grid is extrapolated from a random subset of starts.

    python benchmarks/scaling_fit.py [--threads 2] [--bootstrap 1000] [--baseline-starts 60]
    python benchmarks/scaling_fit.py --quick     # a small grid and few refits: checks it runs

Prints one JSON object. Without the shared data file it uses 240 synthetic runs (and says so).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polyformer.bench.measure import stopwatch, time_calls  # noqa: E402
from polyformer.scaling import FitOptions, bootstrap_fit, fit_law, read_runs  # noqa: E402
from polyformer.scaling.laws import make_law, theta_grid  # noqa: E402
from polyformer.scaling.references import EPOCH_CHINCHILLA  # noqa: E402
from polyformer.scaling.synthetic import sample_runs  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "chinchilla_svg_extracted.csv"
#: ``--quick``: 3 values per parameter (243 starts) instead of the law's full grid, a smoke test.
QUICK_GRID = {"a": (0.0, 10.0, 20.0), "b": (0.0, 10.0, 20.0), "e": (-1.0, 0.0, 1.0),
              "alpha": (0.0, 1.0, 2.0), "beta": (0.0, 1.0, 2.0)}


def _runs():
    if DATA.is_file():
        return read_runs(DATA).drop_highest_loss(5), "Epoch AI digitised Chinchilla runs (240 after dropping 5)"
    return sample_runs(EPOCH_CHINCHILLA, 240, noise=0.01, seed=0), "240 synthetic runs from Besiroglu et al.'s law"


def _numpy_objective(log_n, log_d, log_loss, delta=1e-3):
    """The summed Huber objective and its gradient, written directly in numpy (the baseline)."""

    def fun(theta):
        a, b, e, alpha, beta = theta
        t1, t2 = a - alpha * log_n, b - beta * log_d
        m = np.maximum(np.maximum(t1, t2), e)
        e1, e2, e3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
        total = e1 + e2 + e3
        r = m + np.log(total) - log_loss
        c = np.clip(r, -delta, delta)
        f = float(np.sum(c * (r - 0.5 * c)))
        w1, w2, w3 = c * e1 / total, c * e2 / total, c * e3 / total
        grad = np.array([w1.sum(), w2.sum(), w3.sum(), -(w1 * log_n).sum(), -(w2 * log_d).sum()])
        return f, grad

    return fun


def _baseline(runs, starts, count, seed):
    """scipy L-BFGS-B from ``count`` random grid starts: seconds per start and the best result."""
    fun = _numpy_objective(np.log(runs.values("N")), np.log(runs.values("D")), np.log(runs.values("loss")))
    chosen = np.random.default_rng(seed).choice(len(starts), size=count, replace=False)
    with stopwatch() as watch:
        results = [minimize(fun, starts[i], jac=True, method="L-BFGS-B") for i in chosen]
    per_start = watch.wall / count
    best = min(results, key=lambda r: r.fun)
    return per_start, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads = fitting workers (default 2)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--baseline-starts", type=int, default=60, help="grid starts timed for the scipy baseline")
    parser.add_argument("--repeats", type=int, default=2, help="fit timings to take (the best is reported)")
    parser.add_argument("--quick", action="store_true",
                        help="a 243-start grid, 20 bootstrap refits, 5 baseline starts, one fit timing (seconds)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # the 2-core setting; the fit runs this many worker threads

    if args.quick:
        args.bootstrap, args.baseline_starts, args.repeats = 20, 5, 1
    runs, source = _runs()
    options = FitOptions(grid=QUICK_GRID if args.quick else None)
    fits = []
    fit_timings = time_calls(lambda: fits.append(fit_law(runs, "chinchilla", options)), repeats=args.repeats, warmup=0)
    fit, fit_times = fits[-1], fit_timings.wall
    with stopwatch() as boot:
        booted = bootstrap_fit(fit, runs, n=args.bootstrap, seed=0, options=options)
    boot_time, boot_cpu = boot.wall, boot.cpu

    starts = theta_grid(make_law("chinchilla"), options.grid).numpy()
    per_start, best = _baseline(runs, starts, args.baseline_starts, seed=0)
    boot_rows = np.random.default_rng(1).multinomial(len(runs), np.full(len(runs), 1 / len(runs)), size=20)
    with stopwatch() as baseline_boot:
        for counts in boot_rows:  # baseline bootstrap: one scipy refit per resample, from the optimum
            idx = np.repeat(np.arange(len(runs)), counts)
            fun = _numpy_objective(np.log(runs.values("N"))[idx], np.log(runs.values("D"))[idx],
                                   np.log(runs.values("loss"))[idx])
            minimize(fun, fit.law.theta(), jac=True, method="L-BFGS-B")
    per_refit = baseline_boot.wall / len(boot_rows)

    report = {
        "benchmark": "scaling_fit",
        "data": source,
        "n_runs": len(runs),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "fit": {
            "n_starts": fit.n_starts,
            "seconds": fit_timings.best, "seconds_all": fit_times, "cpu_seconds": fit_timings.cpu_best,
            "target_seconds": 10.0, "meets_target": min(fit_times) <= 10.0,
            "converged": fit.converged, "grad_norm": fit.grad_norm, "objective": fit.objective,
            "parameters": fit.law.parameters(),
        },
        "bootstrap": {
            "n": args.bootstrap, "seconds": boot_time, "cpu_seconds": boot_cpu,
            "target_seconds": 120.0, "meets_target": boot_time <= 120.0,
            "converged_fraction": booted.bootstrap.converged_fraction,
            "standard_errors": booted.bootstrap.standard_errors(),
        },
        "baseline_scipy_per_start": {
            "starts_timed": args.baseline_starts,
            "seconds_per_start": per_start,
            "extrapolated_full_grid_seconds": per_start * len(starts),
            "speedup": per_start * len(starts) / min(fit_times),
            "best_objective_of_subset": float(best.fun),
            "our_objective_minus_baseline": fit.objective - float(best.fun),
            "seconds_per_bootstrap_refit": per_refit,
            "extrapolated_bootstrap_seconds": per_refit * args.bootstrap,
            "bootstrap_speedup": per_refit * args.bootstrap / boot_time,
        },
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
