"""Goodness of fit, and warnings when the data cannot identify a law's parameters."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from polyformer.scaling.laws.base import ScalingLaw
from polyformer.scaling.runs import Runs

_EXPONENT_PREFIXES = ("alpha", "beta")


@dataclass(frozen=True)
class Goodness:
    """How well a fitted law matches the runs it was fitted on."""

    n_points: int
    rmse_log: float  # root-mean-square of log(predicted) - log(observed)
    rmse: float  # root-mean-square of predicted - observed loss
    mae: float  # mean absolute error of the loss
    max_abs_rel_error: float  # largest |predicted/observed - 1|

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def law_inputs(law: ScalingLaw, runs: Runs) -> dict[str, np.ndarray]:
    """The law's variables from the runs table."""
    runs.require(list(law.variables) + ["loss"], purpose=f"the {law.name!r} law")
    return {v: runs.values(v) for v in law.variables}


def log_residuals(law: ScalingLaw, runs: Runs) -> np.ndarray:
    """log(predicted loss) - log(observed loss) for every run."""
    predicted = law.predict(**law_inputs(law, runs))
    return np.log(predicted) - np.log(runs.values("loss"))


def goodness_of_fit(law: ScalingLaw, runs: Runs) -> Goodness:
    """RMSE (log and linear), MAE and worst relative error of ``law`` on ``runs``."""
    observed = runs.values("loss")
    predicted = law.predict(**law_inputs(law, runs))
    log_res = np.log(predicted) - np.log(observed)
    return Goodness(
        n_points=len(observed),
        rmse_log=float(np.sqrt(np.mean(log_res**2))),
        rmse=float(np.sqrt(np.mean((predicted - observed) ** 2))),
        mae=float(np.mean(np.abs(predicted - observed))),
        max_abs_rel_error=float(np.max(np.abs(predicted / observed - 1.0))),
    )


def data_warnings(law: ScalingLaw, runs: Runs) -> list[str]:
    """Warnings about data that cannot pin down the law (before fitting)."""
    warnings: list[str] = []
    n_params = len(law.theta_names)
    if len(runs) < 2 * n_params:
        warnings.append(
            f"only {len(runs)} runs for {n_params} parameters: the fit is barely determined; add runs"
        )
    logs = {}
    for variable in law.variables:
        values = runs.values(variable)
        logs[variable] = np.log(values)
        distinct = len(np.unique(np.round(np.log(values), 6)))
        low, high = float(values.min()), float(values.max())
        if distinct == 1:
            warnings.append(
                f"all runs have the same {variable} ({low:.4g}): the parameters of the {variable} term "
                f"cannot be identified; use runs with several values of {variable}"
            )
            continue
        if distinct == 2:
            warnings.append(f"only two distinct values of {variable}: an exponent and a scale cannot both be checked")
        span = math.log10(high / low)
        if span < 1.0:
            warnings.append(
                f"{variable} spans only {span:.2f} decades ({low:.3g} to {high:.3g}): exponents are poorly "
                "constrained; aim for at least one to two decades"
            )
    if len(logs) == 2:
        a, b = logs.values()
        if a.std() > 0 and b.std() > 0:
            corr = float(np.corrcoef(a, b)[0, 1])
            if abs(corr) > 0.98:
                names = " and ".join(logs)
                warnings.append(
                    f"log {names} are almost collinear (correlation {corr:.3f}): the law cannot separate "
                    "their effects; vary them independently"
                )
    return warnings


def fit_warnings(
    law: ScalingLaw,
    theta: Sequence[float],
    runs: Runs,
    bounds: Mapping[str, tuple[float, float]],
) -> list[str]:
    """Warnings about a fitted law: off-grid optimum, vanishing terms, degenerate exponents or E."""
    warnings: list[str] = []
    for name, value in zip(law.theta_names, theta):
        low, high = bounds[name]
        margin = 1e-9 * max(1.0, abs(low), abs(high))
        if value < low - margin or value > high + margin:
            warnings.append(
                f"fitted {name} = {value:.4g} lies outside the initialisation grid [{low:.4g}, {high:.4g}]: "
                "the grid may not cover the best basin; widen it"
            )
    for name, value in law.parameters().items():
        if name.startswith(_EXPONENT_PREFIXES):
            if value < 0:
                warnings.append(f"fitted exponent {name} = {value:.4g} is negative: the loss grows with its variable")
            elif value < 1e-3:
                warnings.append(f"fitted exponent {name} = {value:.3g} is ~0: its term is a constant the data do not identify")
    min_loss = float(runs.values("loss").min())
    if "E" in law.parameter_names and law.parameters()["E"] < 1e-3 * min_loss:
        warnings.append(
            f"fitted E = {law.parameters()['E']:.3g} is ~0: the data do not identify an irreducible loss"
        )
    warnings.extend(_vanishing_terms(law, theta, runs))
    return warnings


def _vanishing_terms(law: ScalingLaw, theta: Sequence[float], runs: Runs) -> list[str]:
    """Terms of a log-sum-exp law that are < 0.01% of the loss on every run: unidentified."""
    logx = {v: torch.tensor(np.log(runs.values(v))) for v in law.variables}
    features = law.lse_features(logx)
    if features is None or len(features) < 2:
        return []
    t = torch.tensor(np.asarray(theta, dtype=np.float64))[None, :]
    logs = torch.stack([(t @ m)[0] for m in features])  # (K, n)
    share = torch.softmax(logs, dim=0).amax(dim=1)  # largest share of each term over the runs
    out = []
    for k, m in enumerate(features):
        if share[k] < 1e-4:
            names = [n for n, row in zip(law.theta_names, m) if bool(row.abs().max() > 0)]
            out.append(
                f"the term with parameter(s) {', '.join(names)} is below 0.01% of the loss on every run: "
                "those parameters are not identified by the data"
            )
    return out
