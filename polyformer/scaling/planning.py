"""Compute-optimal training: the N and D that minimise a fitted L(N, D) for a FLOP budget C = 6 N D."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from polyformer.errors import ConfigError
from polyformer.scaling.laws import ScalingLaw
from polyformer.scaling.runs import FLOPS_PER_PARAM_TOKEN


@dataclass(frozen=True)
class ComputePlan:
    """The compute-optimal model size and data for one budget."""

    flops: float
    N: float
    D: float
    tokens_per_parameter: float
    loss: float
    method: str  # "closed form" or "numeric"
    interval: dict[str, tuple[float, float]] | None = None  # from bootstrap refits, if any

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.interval is not None:
            out["interval"] = {k: list(v) for k, v in self.interval.items()}
        return out


def _allocates(law: ScalingLaw) -> bool:
    return set(law.variables) == {"N", "D"}


def numeric_compute_optimal(law: ScalingLaw, flops: float, flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN) -> tuple[float, float]:
    """N_opt, D_opt by minimising L(N, C/(kN)) over log N (any law in N and D)."""
    budget = flops / flops_per_param_token
    log_budget = math.log(budget)

    def loss(log_n: float) -> float:
        return float(law.predict(N=math.exp(log_n), D=math.exp(log_budget - log_n)))

    # N between 1 parameter and the whole budget in parameters (D >= 1 token).
    result = minimize_scalar(loss, bounds=(0.0, log_budget), method="bounded", options={"xatol": 1e-10})
    n_opt = math.exp(result.x)
    return n_opt, budget / n_opt


def compute_optimal(law: ScalingLaw, flops: float, flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN) -> tuple[float, float, str]:
    """(N_opt, D_opt, method) for ``flops``: a law's closed form where it has one, else numeric."""
    if not _allocates(law):
        raise ConfigError(
            f"the {law.name!r} law in {', '.join(law.variables)} cannot split compute between model size "
            "and data; fit a law in N and D (chinchilla or kaplan)"
        )
    if not (flops > 0 and math.isfinite(flops)):
        raise ConfigError(f"the FLOP budget must be a positive number, got {flops}")
    closed_form = getattr(law, "compute_optimal", None)
    if closed_form is not None:
        n_opt, d_opt = closed_form(flops, flops_per_param_token)
        return float(n_opt), float(d_opt), "closed form"
    n_opt, d_opt = numeric_compute_optimal(law, flops, flops_per_param_token)
    return n_opt, d_opt, "numeric"


def allocation_exponents(law: ScalingLaw, flops_range: tuple[float, float] = (1e18, 1e26)) -> tuple[float, float] | None:
    """(a, b) in N_opt ∝ C^a and D_opt ∝ C^b, or None for laws not in N and D.

    Closed form where the law has one; otherwise the log-log slope of the numeric optimum
    between the two budgets in ``flops_range``.
    """
    if not _allocates(law) or not law.is_fitted:
        return None
    exact = getattr(law, "allocation_exponents", None)
    if exact is not None:
        return float(exact[0]), float(exact[1])
    (n1, d1, _), (n2, d2, _) = (compute_optimal(law, c) for c in flops_range)
    span = math.log(flops_range[1] / flops_range[0])
    return math.log(n2 / n1) / span, math.log(d2 / d1) / span


def plan_compute(
    law: ScalingLaw,
    budgets: Sequence[float],
    bootstrap_laws: Sequence[ScalingLaw] | None = None,
    level: float = 0.95,
    flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN,
) -> list[ComputePlan]:
    """A :class:`ComputePlan` per budget; intervals over ``bootstrap_laws`` when given."""
    plans = []
    tail = 50.0 * (1.0 - level)
    for flops in budgets:
        n_opt, d_opt, method = compute_optimal(law, float(flops), flops_per_param_token)
        interval = None
        if bootstrap_laws:
            rows = []
            for sample in bootstrap_laws:
                n_s, d_s, _ = compute_optimal(sample, float(flops), flops_per_param_token)
                rows.append((n_s, d_s, float(sample.predict(N=n_s, D=d_s))))
            arr = np.array(rows)
            interval = {
                name: (float(np.percentile(arr[:, i], tail)), float(np.percentile(arr[:, i], 100 - tail)))
                for i, name in enumerate(("N", "D", "loss"))
            }
        plans.append(
            ComputePlan(
                flops=float(flops), N=n_opt, D=d_opt, tokens_per_parameter=d_opt / n_opt,
                loss=float(law.predict(N=n_opt, D=d_opt)), method=method, interval=interval,
            )
        )
    return plans
