"""Extrapolation: predictions with intervals, held-out largest runs, and learning-curve ends."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from polyformer.errors import ConfigError, DataError
from polyformer.options import require
from polyformer.scaling.fit import as_runs, fit_law, resolve_law
from polyformer.scaling.fit_options import FitOptions
from polyformer.scaling.laws import PowerLaw, ScalingLaw
from polyformer.scaling.planning import compute_optimal
from polyformer.scaling.result import HoldoutReport, ScalingFit
from polyformer.scaling.runs import FLOPS_PER_PARAM_TOKEN, Runs


@dataclass(frozen=True)
class Prediction:
    """A predicted loss, where it was predicted, and an interval from bootstrap refits (if any)."""

    loss: float
    inputs: dict[str, float]  # the variables used (N, D, C or step)
    interval: tuple[float, float] | None
    level: float | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "inputs": self.inputs,
                "interval": None if self.interval is None else list(self.interval),
                "level": self.level, "note": self.note}


def _point(law: ScalingLaw, given: dict[str, float]) -> tuple[dict[str, float], str]:
    """The law's inputs from what was given.

    For a law in N and D: C with one of N or D derives the other from C = 6 N D, and C alone
    means the compute-optimal allocation for C.
    """
    if all(v in given for v in law.variables):
        return {v: given[v] for v in law.variables}, ""
    in_n_d = set(law.variables) == {"N", "D"}
    if in_n_d and "C" in given:
        budget = given["C"] / FLOPS_PER_PARAM_TOKEN
        if "N" in given:
            return {"N": given["N"], "D": budget / given["N"]}, "D derived as C / (6 N)"
        if "D" in given:
            return {"N": budget / given["D"], "D": given["D"]}, "N derived as C / (6 D)"
        n_opt, d_opt, _ = compute_optimal(law, given["C"])
        return {"N": n_opt, "D": d_opt}, f"at the compute-optimal allocation for C = {given['C']:.3g}"
    hint = " (or C, alone or with one of them)" if in_n_d else ""
    raise ConfigError(
        f"the {law.name!r} law predicts from {', '.join(law.variables)}{hint}; got {', '.join(given) or 'nothing'}"
    )


def predict_loss(fit: ScalingFit | ScalingLaw, level: float | None = None, **given: float) -> Prediction:
    """Loss at N and D (or C, or step); with a bootstrapped fit, a percentile interval too.

    ``predict_loss(fit, N=70e9, D=1.4e12)`` or ``predict_loss(fit, C=5.76e23)`` (the latter at the
    compute-optimal allocation, for laws in N and D).
    """
    values = {k: float(v) for k, v in given.items() if v is not None}
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number, got {value}")
    law = fit.law if isinstance(fit, ScalingFit) else fit
    inputs, note = _point(law, values)
    loss = float(law.predict(**inputs))
    bootstrap = fit.bootstrap if isinstance(fit, ScalingFit) else None
    if bootstrap is None:
        return Prediction(loss, inputs, None, None, note or "no bootstrap in this fit: no interval")
    level = bootstrap.level if level is None else level
    require(0 < level < 1, f"level must be between 0 and 1, got {level}")
    samples = []
    for sample in bootstrap.laws(law):
        point, _ = _point(sample, values)  # compute-optimal allocation varies with the refit too
        samples.append(float(sample.predict(**point)))
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return Prediction(loss, inputs, (float(low), float(high)), level, note)


# ----- hold out the largest runs ---------------------------------------------------------------------
def holdout_largest(
    data: Runs | Any,
    law: ScalingLaw | str = "chinchilla",
    options: FitOptions | None = None,
    *,
    fraction: float = 0.1,
    by: str = "C",
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    **law_context: Any,
) -> ScalingFit:
    """Fit on all but the largest ``fraction`` of runs (ranked by ``by``) and score the rest.

    Returns the fit on the smaller runs with a :class:`HoldoutReport` of its errors on the
    held-out ones: how far this law would have extrapolated.
    """
    require(0 < fraction < 1, f"holdout fraction must be between 0 and 1, got {fraction}")
    runs = as_runs(data)
    law = resolve_law(law, **law_context)
    runs.require([by], purpose=f"holding out the largest runs by {by}")
    size = runs.values(by)
    n_out = max(1, int(round(fraction * len(runs))))
    threshold = float(np.sort(size)[-n_out])
    held = size >= threshold
    if (~held).sum() <= len(law.theta_names):
        raise DataError(
            f"holding out {int(held.sum())} of {len(runs)} runs leaves too few to fit the {law.name!r} law"
        )
    fit = fit_law(runs.subset(~held), law, options, bootstrap=bootstrap, seed=seed, level=level)
    test = runs.subset(held)
    inputs = {v: test.values(v) for v in fit.law.variables}
    predicted = fit.law.predict(**inputs)
    observed = test.values("loss")
    rel = predicted / observed - 1.0
    rows = [
        {**{v: float(inputs[v][i]) for v in inputs}, "observed": float(observed[i]),
         "predicted": float(predicted[i]), "relative_error": float(rel[i])}
        for i in range(len(observed))
    ]
    report = HoldoutReport(
        by=by, threshold=threshold, rows=rows,
        mean_abs_rel_error=float(np.mean(np.abs(rel))), max_abs_rel_error=float(np.max(np.abs(rel))),
        rmse_log=float(np.sqrt(np.mean(np.log(predicted / observed) ** 2))),
    )
    return replace(fit, holdout=report, notes=fit.notes + [f"fitted without the {len(rows)} runs with {by} >= {threshold:.3g}"])


# ----- learning curves -------------------------------------------------------------------------------
@dataclass
class CurveExtrapolation:
    """A learning curve's early part fitted with L(step) = E + (S0/step)^alpha, and its end predicted."""

    run: str
    N: float | None
    fit_until_step: float
    final_step: float
    observed_final: float
    predicted_final: float
    relative_error: float
    law: PowerLaw
    n_points: int
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run, "N": self.N, "fit_until_step": self.fit_until_step, "final_step": self.final_step,
            "observed_final": self.observed_final, "predicted_final": self.predicted_final,
            "relative_error": self.relative_error, "n_points": self.n_points,
            "law": self.law.to_dict(), "warnings": self.warnings,
        }


def extrapolate_learning_curves(
    data: Runs | Any,
    fit_fraction: float = 0.5,
    options: FitOptions | None = None,
    min_points: int = 5,
) -> list[CurveExtrapolation]:
    """For each run, fit the steps up to ``fit_fraction`` of its last step and predict its final loss."""
    require(0 < fit_fraction < 1, f"fit fraction must be between 0 and 1, got {fit_fraction}")
    runs = as_runs(data)
    runs.require(["step", "loss"], purpose="learning-curve extrapolation")
    key = runs.frame["run"] if runs.has("run") else (runs.frame["N"] if runs.has("N") else None)
    if key is None:
        raise DataError(f"{runs.source}: learning curves need a run (or N) column to tell the curves apart")
    out = []
    for name in key.unique():
        rows = np.flatnonzero((key == name).to_numpy())
        steps = runs.values("step")[rows]
        order = rows[np.argsort(steps)]
        steps = np.sort(steps)
        final = float(steps[-1])
        early = order[steps <= fit_fraction * final]
        if len(early) < min_points:
            continue
        fit = fit_law(runs.subset(np.isin(np.arange(len(runs)), early)), "power", options, variable="step")
        observed = float(runs.values("loss")[order[-1]])
        predicted = float(fit.law.predict(step=final))
        out.append(
            CurveExtrapolation(
                run=str(name), N=float(runs.values("N")[order[0]]) if runs.has("N") else None,
                fit_until_step=float(fit_fraction * final), final_step=final, observed_final=observed,
                predicted_final=predicted, relative_error=predicted / observed - 1.0,
                law=fit.law, n_points=len(early), warnings=fit.warnings,  # type: ignore[arg-type]
            )
        )
    if not out:
        raise DataError(
            f"{runs.source}: no run has {min_points} or more points before {fit_fraction:.0%} of its last step"
        )
    return out
