"""Chinchilla's three ways to find how compute should be split between model size and data.

Each approach yields the exponents in N_opt ∝ C^a and D_opt ∝ C^b (Hoffmann et al. 2022, §3):

1. :func:`envelope_approach` — for each FLOP budget, the run with the lowest loss at that budget
   (interpolating each training curve; for final losses only, the best run of each budget group);
   a power law through those minima.
2. :func:`isoflop_approach` — runs grouped by FLOP budget; a parabola of loss in log N for each
   group gives the optimal N at that budget; a power law through those optima.
3. :func:`parametric_approach` — from a fitted L(N, D) (closed form for the Chinchilla law,
   a = beta / (alpha + beta)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polyformer.errors import DataError
from polyformer.scaling.laws import ScalingLaw
from polyformer.scaling.planning import allocation_exponents, compute_optimal
from polyformer.scaling.runs import FLOPS_PER_PARAM_TOKEN, Runs


@dataclass
class AllocationFit:
    """N_opt = k_N C^a and D_opt = k_D C^b, with the per-budget optima they were fitted to."""

    approach: str
    a: float
    b: float
    n_coefficient: float
    d_coefficient: float
    budgets: np.ndarray  # FLOPs of each optimum used
    n_opt: np.ndarray
    d_opt: np.ndarray
    notes: list[str] = field(default_factory=list)

    def n_opt_at(self, flops: Any) -> np.ndarray:
        return self.n_coefficient * np.asarray(flops, dtype=np.float64) ** self.a

    def d_opt_at(self, flops: Any) -> np.ndarray:
        return self.d_coefficient * np.asarray(flops, dtype=np.float64) ** self.b

    def to_dict(self) -> dict[str, Any]:
        return {
            "approach": self.approach, "a": self.a, "b": self.b,
            "n_coefficient": self.n_coefficient, "d_coefficient": self.d_coefficient,
            "optima": [{"C": float(c), "N_opt": float(n), "D_opt": float(d)}
                       for c, n, d in zip(self.budgets, self.n_opt, self.d_opt)],
            "notes": list(self.notes),
        }


def fit_allocation(approach: str, budgets: np.ndarray, n_opt: np.ndarray, d_opt: np.ndarray, notes: list[str]) -> AllocationFit:
    """Least-squares lines through log N_opt and log D_opt against log C."""
    budgets, n_opt, d_opt = (np.asarray(v, dtype=np.float64) for v in (budgets, n_opt, d_opt))
    if len(np.unique(np.round(np.log(budgets), 6))) < 2:
        raise DataError(
            f"{approach}: optima at fewer than two distinct FLOP budgets ({len(budgets)} found); "
            "an exponent needs runs at several budgets"
        )
    log_c = np.log(budgets)
    a, log_kn = np.polyfit(log_c, np.log(n_opt), 1)
    b, log_kd = np.polyfit(log_c, np.log(d_opt), 1)
    return AllocationFit(approach, float(a), float(b), math.exp(log_kn), math.exp(log_kd), budgets, n_opt, d_opt, notes)


def group_by_budget(flops: np.ndarray, tolerance: float = 0.1, min_size: int = 3) -> list[np.ndarray]:
    """Indices of runs sharing a FLOP budget: greedy densest windows of ±``tolerance`` (relative).

    Repeatedly takes the window [c, c (1 + tolerance)^2] holding the most unassigned runs; groups
    smaller than ``min_size`` are dropped. Returns groups sorted by budget.
    """
    log_c = np.log(np.asarray(flops, dtype=np.float64))
    width = 2.0 * math.log1p(tolerance)
    free = np.ones(len(log_c), dtype=bool)
    groups = []
    while free.sum() >= min_size:
        idx = np.flatnonzero(free)
        values = np.sort(log_c[idx])
        counts = np.searchsorted(values, values + width, side="right") - np.arange(len(values))
        best = int(np.argmax(counts))
        if counts[best] < min_size:
            break
        low = values[best]
        members = idx[(log_c[idx] >= low) & (log_c[idx] <= low + width)]
        groups.append(members)
        free[members] = False
    return sorted(groups, key=lambda g: float(np.median(log_c[g])))


# ----- approach 2: IsoFLOP profiles --------------------------------------------------------------
@dataclass
class IsoflopProfile:
    """A parabola loss = c0 + c1 log N + c2 (log N)^2 through the runs of one FLOP budget."""

    budget: float  # geometric mean C of the group
    indices: np.ndarray  # rows of the runs table
    coefficients: tuple[float, float, float]  # c0, c1, c2
    n_opt: float
    loss_at_opt: float
    inside: bool  # whether the vertex lies within the group's range of N

    def loss_at(self, n: Any) -> np.ndarray:
        u = np.log(np.asarray(n, dtype=np.float64))
        c0, c1, c2 = self.coefficients
        return c0 + c1 * u + c2 * u * u


def isoflop_profiles(runs: Runs, tolerance: float = 0.1, min_runs: int = 3) -> tuple[list[IsoflopProfile], list[str]]:
    """Parabolas for every FLOP-budget group with at least ``min_runs`` distinct model sizes."""
    runs.require(["N", "C", "loss"], purpose="IsoFLOP profiles")
    n, c, loss = runs.values("N"), runs.values("C"), runs.values("loss")
    profiles, notes = [], []
    for group in group_by_budget(c, tolerance, min_runs):
        budget = float(np.exp(np.mean(np.log(c[group]))))
        if len(np.unique(np.round(np.log(n[group]), 6))) < min_runs:
            notes.append(f"budget {budget:.3g}: fewer than {min_runs} distinct model sizes, skipped")
            continue
        u = np.log(n[group])
        c2, c1, c0 = np.polyfit(u, loss[group], 2)
        if not c2 > 0:
            notes.append(f"budget {budget:.3g}: loss is not convex in log N (no minimum), skipped")
            continue
        vertex = -c1 / (2.0 * c2)
        inside = bool(u.min() <= vertex <= u.max())
        if not inside:
            notes.append(f"budget {budget:.3g}: the optimum lies outside the sizes tried (extrapolated)")
        profiles.append(
            IsoflopProfile(budget, group, (float(c0), float(c1), float(c2)), float(math.exp(vertex)),
                           float(c0 + c1 * vertex + c2 * vertex * vertex), inside)
        )
    return profiles, notes


def isoflop_approach(runs: Runs, tolerance: float = 0.1, min_runs: int = 3) -> tuple[AllocationFit, list[IsoflopProfile]]:
    """Approach 2: exponents from the vertices of the IsoFLOP parabolas."""
    profiles, notes = isoflop_profiles(runs, tolerance, min_runs)
    if len(profiles) < 2:
        raise DataError(
            f"IsoFLOP approach: {len(profiles)} usable FLOP budget group(s) found (runs within ±{tolerance:.0%} "
            f"of a budget, at least {min_runs} model sizes each); need two or more"
        )
    budgets = np.array([p.budget for p in profiles])
    n_opt = np.array([p.n_opt for p in profiles])
    d_opt = budgets / (FLOPS_PER_PARAM_TOKEN * n_opt)
    return fit_allocation("isoflop", budgets, n_opt, d_opt, notes), profiles


# ----- approach 1: minimum over training curves ---------------------------------------------------
def _curves(runs: Runs) -> list[np.ndarray]:
    """Row indices of each training curve (by run id, else by model size), sorted by compute."""
    key = runs.frame["run"] if runs.has("run") else runs.frame["N"]
    c = runs.values("C")
    return [idx[np.argsort(c[idx])] for idx in (np.flatnonzero((key == k).to_numpy()) for k in key.unique())]


def envelope_approach(runs: Runs, n_budgets: int = 30, tolerance: float = 0.1) -> AllocationFit:
    """Approach 1: the lowest loss reached at each FLOP budget, over all runs.

    With training curves (several rows per run: a ``step`` or ``run`` column), each curve's log
    loss is interpolated linearly in log C at ``n_budgets`` log-spaced budgets, and the best run
    at each budget gives (N_opt, D_opt). With final losses only, the best run of each FLOP-budget
    group (see :func:`group_by_budget`) is used. Budgets where the best run is the smallest or the
    largest run reaching that budget are skipped: the optimum may lie beyond the sizes tried.
    """
    runs.require(["N", "D", "C", "loss"], purpose="the minimum-loss envelope")
    n, d, c, loss = (runs.values(k) for k in ("N", "D", "C", "loss"))
    curves = [cv for cv in _curves(runs) if len(cv) >= 2] if (runs.has("step") or runs.has("run")) else []
    notes: list[str] = []
    budgets, n_opt, d_opt = [], [], []
    if curves:
        low = max(min(c[cv[0]] for cv in curves), c.min())
        high = c.max()
        at_edge = 0
        for budget in np.exp(np.linspace(math.log(low), math.log(high), n_budgets)):
            candidates = []  # (interpolated log loss, N, D) of each curve that reaches this budget
            for cv in curves:
                if c[cv[0]] <= budget <= c[cv[-1]]:
                    lc = np.log(c[cv])
                    candidates.append((float(np.interp(math.log(budget), lc, np.log(loss[cv]))), float(n[cv[0]]),
                                       float(np.exp(np.interp(math.log(budget), lc, np.log(d[cv]))))))
            if len(candidates) < 3:
                continue
            best = min(candidates)
            sizes = [size for _, size, _ in candidates]
            if best[1] in (min(sizes), max(sizes)):
                at_edge += 1  # the optimum may lie beyond the sizes that reach this budget
                continue
            budgets.append(budget)
            n_opt.append(best[1])
            d_opt.append(best[2])
        notes.append(f"interpolated {len(curves)} training curves at {len(budgets)} FLOP budgets")
        if at_edge:
            notes.append(f"skipped {at_edge} budget(s) where the best run was the smallest or largest reaching it")
    else:
        for group in group_by_budget(c, tolerance, min_size=2):
            best = group[int(np.argmin(loss[group]))]
            budgets.append(float(np.exp(np.mean(np.log(c[group])))))
            n_opt.append(float(n[best]))
            d_opt.append(float(d[best]))
        notes.append("no training curves: used the lowest-loss run of each FLOP-budget group")
    return fit_allocation("envelope", np.array(budgets), np.array(n_opt), np.array(d_opt), notes)


# ----- approach 3: parametric ---------------------------------------------------------------------
def parametric_approach(law: ScalingLaw, flops_range: tuple[float, float] = (1e18, 1e26)) -> AllocationFit:
    """Approach 3: exponents of the fitted law's compute-optimal frontier."""
    exponents = allocation_exponents(law, flops_range)
    if exponents is None:
        raise DataError(f"the {law.name!r} law is not a law in N and D: it has no compute-optimal frontier")
    budgets = np.exp(np.linspace(math.log(flops_range[0]), math.log(flops_range[1]), 9))
    optima = [compute_optimal(law, float(b)) for b in budgets]
    n_opt = np.array([o[0] for o in optima])
    d_opt = np.array([o[1] for o in optima])
    a, b = exponents
    return AllocationFit(
        "parametric", a, b, float(n_opt[0] / budgets[0] ** a), float(d_opt[0] / budgets[0] ** b),
        budgets, n_opt, d_opt, [f"from the fitted {law.name} law ({optima[0][2]})"],
    )
