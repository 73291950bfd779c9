"""Fit and draw a sweep from its run store: loss against compute with the fitted power law.

:func:`fit_sweep` fits ``L(C) = E + (C0 / C)^alpha`` (or any law of :mod:`polyformer.scaling`)
to the finished runs of a store, once on every run and once on all but the largest (by C), and
reports how well the second fit predicts the held-out run. :func:`plot_sweep` draws the final
validation losses against compute on log-log axes with both fits, and every run's validation
curve against the compute spent so far (the envelope of the curves is the power law).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyformer.errors import DataError
from polyformer.files import save_figure
from polyformer.scaling.store import RunStore, read_store_runs


@dataclass
class SweepFit:
    """Fits of one sweep: on all runs, and on all but the largest with its prediction error."""

    runs: Any  # polyformer.scaling.runs.Runs
    full: Any  # ScalingFit on every run
    holdout: Any | None  # ScalingFit on all but the largest run; .holdout has the error on it

    @property
    def holdout_error(self) -> float | None:
        """Relative error of the predicted loss of the largest run (predicted / observed - 1)."""
        if self.holdout is None or self.holdout.holdout is None:
            return None
        return float(self.holdout.holdout.rows[-1]["relative_error"])

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"law": self.full.law.to_dict(), "runs": len(self.runs),
                               "rmse_log": self.full.goodness.rmse_log}
        if self.holdout is not None and self.holdout.holdout is not None:
            row = self.holdout.holdout.rows[-1]
            out["holdout"] = {"law": self.holdout.law.to_dict(), "observed": row["observed"],
                              "predicted": row["predicted"], "relative_error": row["relative_error"]}
        return out


def fit_sweep(store: str | Path, sweep: str | None = None, law: str = "power", variable: str = "C",
              params: str = "non_embedding", holdout: bool = True, options: Any = None) -> SweepFit:
    """Fit ``law`` to the finished runs of ``sweep`` (every sweep in the store when None).

    ``options``: a :class:`~polyformer.scaling.fit.FitOptions` (e.g. a coarser grid of starts).
    """
    from polyformer.scaling.extrapolate import holdout_largest
    from polyformer.scaling.fit import FitOptions, fit_law

    runs = read_store_runs(store, sweep=sweep, params=params)
    context = {"variable": variable} if law in ("power", "pure-power") else {}
    options = options or FitOptions(progress=False)
    full = fit_law(runs, law, options, **context)
    held = None
    if holdout:
        by = variable if law in ("power", "pure-power") else "C"
        held = holdout_largest(runs, law, options, fraction=1.0 / len(runs), by=by, **context)
    return SweepFit(runs=runs, full=full, holdout=held)


def plot_sweep(store: str | Path, path: str | Path, sweep: str | None = None, fit: SweepFit | None = None,
               params: str = "non_embedding", variable: str = "C", loss_label: str = "nats/token") -> Path:
    """Two panels: final validation loss against ``variable`` (C, or N for a fixed-D ladder) with the
    fitted laws, and the validation curves against compute spent."""
    if variable not in ("C", "N"):
        raise DataError(f"plot_sweep draws loss against C or N, not {variable!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with RunStore(store, create=False) as opened:
        runs = opened.runs(sweep=sweep, status="finished")
        if not runs:
            raise DataError(f"run store {str(store)!r} has no finished runs to draw")
        curves = {run.id: opened.curve(run.id) for run in runs}
    n_of = (lambda r: r.params_non_embedding) if params == "non_embedding" else (lambda r: r.params)
    compute = np.array([6.0 * n_of(r) * r.tokens for r in runs])
    loss = np.array([r.final_val_loss for r in runs])
    sizes = np.array([n_of(r) for r in runs], dtype=float)
    colours = plt.cm.viridis((np.log(sizes) - np.log(sizes).min()) / max(1e-9, np.ptp(np.log(sizes))))

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    xs = compute if variable == "C" else sizes
    grid = np.geomspace(xs.min() / 3, xs.max() * 3, 200)
    c_grid = np.geomspace(compute.min() / 3, compute.max() * 3, 200)
    for run, x, l, colour in zip(runs, xs, loss, colours):
        left.scatter([x], [l], color=colour, s=40, zorder=3)
        left.annotate(run.name, (x, l), textcoords="offset points", xytext=(5, 4), fontsize=7)
        points = curves[run.id]
        if points:
            spent = np.array([6.0 * n_of(run) * p["tokens"] for p in points])
            right.plot(spent, [p["loss"] for p in points], "-o", ms=2.5, color=colour, label=run.name)
    if fit is not None:
        law = fit.full.law
        left.plot(grid, law.predict(**{variable: grid}), "k-", lw=1, label=_law_label("all runs", law, variable))
        if variable == "C":
            right.plot(c_grid, law.predict(C=c_grid), "k--", lw=1, label="fitted law")
        if fit.holdout is not None and fit.holdout.holdout is not None:
            held_law = fit.holdout.law
            row = fit.holdout.holdout.rows[-1]
            left.plot(grid, held_law.predict(**{variable: grid}), color="tab:red", ls="--", lw=1,
                      label=_law_label("without the largest", held_law, variable))
            left.scatter([row[variable]], [row["predicted"]], marker="x", color="tab:red", s=60, zorder=4,
                         label=f"predicted largest: {row['predicted']:.3f} ({100 * row['relative_error']:+.1f}%)")
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter

    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        # losses span less than a decade: evenly spaced plain numbers on the log axis
        ax.yaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("compute C = 6 N D (FLOPs, N without embeddings)")
        ax.grid(True, which="both", alpha=0.3)
    if variable == "N":
        left.set_xlabel("N (parameters without embeddings)")
    left.set_ylabel(f"final validation loss ({loss_label})")
    left.set_title("loss against compute" if variable == "C" else "loss against model size (same D)")
    right.set_ylabel("validation loss")
    right.set_title("validation curves against compute spent")
    left.legend(fontsize=7)
    right.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def _law_label(what: str, law: Any, variable: str = "C") -> str:
    values = law.parameters()
    if {"E", "X0", "alpha"} <= set(values):
        return f"{what}: L = {values['E']:.3f} + ({values['X0']:.3g}/{variable})^{values['alpha']:.3f}"
    return f"{what}: {law.formula}"
