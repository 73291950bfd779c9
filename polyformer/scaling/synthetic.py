"""Runs drawn from a known law with multiplicative noise: for tests, demos and sanity checks."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from polyformer.options import require
from polyformer.scaling.laws import ScalingLaw
from polyformer.scaling.planning import compute_optimal
from polyformer.scaling.runs import FLOPS_PER_PARAM_TOKEN, Runs, runs_from_frame


def _noisy(loss: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """loss * exp(noise * standard normal): noise is the standard deviation of log-loss."""
    require(noise >= 0, f"noise must be >= 0, got {noise}")
    return loss * np.exp(noise * rng.standard_normal(loss.shape))


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int) -> np.ndarray:
    low, high = bounds
    require(0 < low < high, f"range must satisfy 0 < low < high, got {bounds}")
    return np.exp(rng.uniform(math.log(low), math.log(high), size))


def sample_runs(
    law: ScalingLaw,
    n_runs: int = 200,
    ranges: dict[str, tuple[float, float]] | None = None,
    noise: float = 0.01,
    seed: int = 0,
) -> Runs:
    """Runs with each of the law's variables log-uniform in ``ranges`` (defaults cover 3 decades)."""
    rng = np.random.default_rng(seed)
    defaults = {"N": (1e7, 1e10), "D": (1e8, 1e11), "C": (1e17, 1e22), "step": (1e2, 1e5)}
    ranges = {**defaults, **(ranges or {})}
    values = {v: _log_uniform(rng, ranges[v], n_runs) for v in law.variables}
    frame = pd.DataFrame(values)
    frame["loss"] = _noisy(law.predict(**values), noise, rng)
    return runs_from_frame(frame, source=f"synthetic {law.name}")


def isoflop_runs(
    law: ScalingLaw,
    budgets: Sequence[float] = (1e18, 3e18, 1e19, 3e19, 1e20, 3e20, 1e21),
    per_budget: int = 9,
    spread: float = 8.0,
    noise: float = 0.005,
    seed: int = 0,
) -> Runs:
    """An IsoFLOP design: at each budget, ``per_budget`` sizes log-spaced within ×/÷ ``spread`` of N_opt."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget in budgets:
        n_opt, _, _ = compute_optimal(law, float(budget))
        for n in n_opt * np.exp(np.linspace(-math.log(spread), math.log(spread), per_budget)):
            rows.append({"N": n, "C": float(budget), "D": float(budget) / (FLOPS_PER_PARAM_TOKEN * n)})
    frame = pd.DataFrame(rows)
    frame["loss"] = _noisy(law.predict(N=frame["N"].to_numpy(), D=frame["D"].to_numpy()), noise, rng)
    return runs_from_frame(frame, source=f"synthetic IsoFLOP {law.name}")


def training_curves(
    law: ScalingLaw,
    sizes: Sequence[float],
    final_tokens: float | Sequence[float],
    points: int = 40,
    tokens_per_step: float = 5e5,
    noise: float = 0.005,
    seed: int = 0,
) -> Runs:
    """Learning curves: for each size N, the loss after D tokens for log-spaced D up to the end.

    The loss at D tokens is ``law.predict(N=N, D=D)`` (a law in N and D) or, for a law in N and
    step, ``law.predict(N=N, step=D / tokens_per_step)``.
    """
    rng = np.random.default_rng(seed)
    finals = np.broadcast_to(np.asarray(final_tokens, dtype=np.float64), (len(sizes),))
    frames = []
    for i, (n, final) in enumerate(zip(sizes, finals)):
        tokens = np.exp(np.linspace(math.log(final / 100.0), math.log(final), points))
        steps = tokens / tokens_per_step
        inputs = {"N": np.full(points, float(n)), "D": tokens, "step": steps}
        loss = law.predict(**{v: inputs[v] for v in law.variables})
        frames.append(pd.DataFrame({"run": f"run{i}", "N": float(n), "D": tokens, "step": steps, "loss": loss}))
    frame = pd.concat(frames, ignore_index=True)
    frame["loss"] = _noisy(frame["loss"].to_numpy(), noise, rng)
    return runs_from_frame(frame, source=f"synthetic curves {law.name}")
