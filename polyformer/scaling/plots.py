"""Figures: the fitted law against the runs, IsoFLOP profiles, the compute-optimal frontier, residuals."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from polyformer.files import save_figure
from polyformer.scaling.approaches import AllocationFit, IsoflopProfile
from polyformer.scaling.diagnostics import log_residuals
from polyformer.scaling.planning import allocation_exponents, compute_optimal
from polyformer.scaling.result import ScalingFit
from polyformer.scaling.runs import FLOPS_PER_PARAM_TOKEN, Runs

_LABELS = {"N": "parameters N", "D": "training tokens D", "C": "training FLOPs C", "step": "step"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _span(values: np.ndarray, pad: float = 0.0) -> np.ndarray:
    low, high = np.log(values.min()), np.log(values.max())
    return np.exp(np.linspace(low - pad, high + pad, 200))


def _representatives(values: np.ndarray, k: int = 5) -> np.ndarray:
    return np.unique(np.exp(np.quantile(np.log(values), np.linspace(0.0, 1.0, k))))


def _log_axes(ax: Any, y_values: np.ndarray | None = None) -> None:
    """Log-log axes with plain numbers on the loss axis, limited to the data (padded)."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    if y_values is not None:
        ax.set_ylim(y_values.min() / 1.05, y_values.max() * 1.05)


def _scatter(ax: Any, x: np.ndarray, y: np.ndarray, colour: np.ndarray, label: str) -> None:
    points = ax.scatter(x, y, c=np.log10(colour), cmap="viridis", s=14, alpha=0.8, edgecolors="none")
    ax.figure.colorbar(points, ax=ax, label=f"log10 {label}")
    _log_axes(ax, y)


def _n_d_panels(axes: Sequence[Any], runs: Runs, fit: ScalingFit, profiles: list[IsoflopProfile] | None,
                allocations: Sequence[AllocationFit]) -> None:
    law = fit.law
    n, d, loss = runs.values("N"), runs.values("D"), runs.values("loss")
    c = runs.values("C") if runs.has("C") else FLOPS_PER_PARAM_TOKEN * n * d
    grid_c = _span(c, 0.3)
    sizes = _representatives(n)
    frontier = np.array([compute_optimal(law, float(x))[:2] for x in grid_c])
    colours = _pyplot().cm.plasma(np.linspace(0.0, 0.85, len(sizes)))

    ax = axes[0]
    _scatter(ax, c, loss, n, "N")
    for size, colour in zip(sizes, colours):
        tokens = grid_c / (FLOPS_PER_PARAM_TOKEN * size)
        shown = (tokens >= d.min() / 3) & (tokens <= d.max() * 3)  # where runs of this size could be
        ax.plot(grid_c[shown], law.predict(N=size, D=tokens[shown]), color=colour, lw=1)
    ax.plot(grid_c, law.predict(N=frontier[:, 0], D=frontier[:, 1]), "k--", lw=1.5, label="compute-optimal")
    ax.set(xlabel=_LABELS["C"], ylabel="loss", title="loss vs compute (lines: fixed N)")
    ax.legend(fontsize=8)

    ax = axes[1]
    _scatter(ax, n, loss, c, "C")
    budgets = [p.budget for p in profiles] if profiles else list(_representatives(c))
    grid_n = _span(n, 0.5)
    for budget in budgets:
        ax.plot(grid_n, law.predict(N=grid_n, D=budget / (FLOPS_PER_PARAM_TOKEN * grid_n)), color="0.4", lw=0.8)
        n_opt, d_opt, _ = compute_optimal(law, budget)
        ax.plot([n_opt], [law.predict(N=n_opt, D=d_opt)], "r.", ms=6)
    ax.set(xlabel=_LABELS["N"], ylabel="loss", title="IsoFLOP curves of the law (red: optimum)")

    ax = axes[2]
    _scatter(ax, d, loss, n, "N")
    grid_d = _span(d, 0.3)
    for size, colour in zip(sizes, colours):
        ax.plot(grid_d, law.predict(N=size, D=grid_d), color=colour, lw=1)
    ax.set(xlabel=_LABELS["D"], ylabel="loss", title="loss vs data (lines: fixed N)")

    ax = axes[3]
    if profiles:
        cmap = _pyplot().cm.viridis(np.linspace(0.0, 0.9, len(profiles)))
        for profile, colour in zip(profiles, cmap):
            members = profile.indices
            ax.scatter(n[members], loss[members], color=colour, s=12)
            grid = _span(n[members], 0.2)
            ax.plot(grid, profile.loss_at(grid), color=colour, lw=1)
            ax.plot([profile.n_opt], [profile.loss_at_opt], "kx", ms=6)
        ax.set_xscale("log")
        ax.set(xlabel=_LABELS["N"], ylabel="loss", title="IsoFLOP profiles: parabolas in log N (x: optimum)")
    else:
        ax.text(0.5, 0.5, "no FLOP-budget groups\nfor IsoFLOP profiles", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()

    ax = axes[4]
    ax.plot(grid_c, frontier[:, 0], "C0-", label=f"N_opt (parametric, a={law_exponent(fit, 0):.3f})")
    ax.plot(grid_c, frontier[:, 1], "C1-", label=f"D_opt (parametric, b={law_exponent(fit, 1):.3f})")
    markers = {"isoflop": "o", "envelope": "s"}
    for alloc in allocations:
        if alloc.approach == "parametric":
            continue
        marker = markers.get(alloc.approach, "^")
        ax.plot(alloc.budgets, alloc.n_opt, "C0" + marker, ms=4, mfc="none", label=f"N_opt {alloc.approach} (a={alloc.a:.3f})")
        ax.plot(alloc.budgets, alloc.d_opt, "C1" + marker, ms=4, mfc="none", label=f"D_opt {alloc.approach} (b={alloc.b:.3f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel=_LABELS["C"], ylabel="N_opt, D_opt", title="compute-optimal frontier")
    ax.legend(fontsize=7)


def law_exponent(fit: ScalingFit, which: int) -> float:
    exponents = allocation_exponents(fit.law)
    return float("nan") if exponents is None else exponents[which]


def _curve_panels(axes: Sequence[Any], runs: Runs, fit: ScalingFit) -> None:
    law = fit.law
    x_name = [v for v in law.variables if v != "N"][0] if len(law.variables) > 1 else law.variables[0]
    x, loss = runs.values(x_name), runs.values("loss")
    ax = axes[0]
    grid = _span(x, 0.2)
    if "N" in law.variables and len(law.variables) == 2:
        n = runs.values("N")
        _scatter(ax, x, loss, n, "N")
        for size in _representatives(n):
            ax.plot(grid, law.predict(**{"N": np.full_like(grid, size), x_name: grid}), color="0.3", lw=1)
    else:
        ax.scatter(x, loss, s=14, alpha=0.8)
        _log_axes(ax, loss)
        ax.plot(grid, law.predict(**{x_name: grid}), "k-", lw=1.5, label="fit")
        ax.legend(fontsize=8)
    ax.set(xlabel=_LABELS[x_name], ylabel="loss", title=f"loss vs {x_name}")


def plot_fit(
    runs: Runs,
    fit: ScalingFit,
    path: str | Path,
    profiles: list[IsoflopProfile] | None = None,
    allocations: Sequence[AllocationFit] = (),
    title: str | None = None,
) -> Path:
    """One PNG with the runs, the fitted law, and (for laws in N and D) IsoFLOP and frontier panels."""
    plt = _pyplot()
    n_d = set(fit.law.variables) == {"N", "D"}
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5)) if n_d else plt.subplots(1, 2, figsize=(12, 4.5))
    axes = list(np.ravel(axes))
    if n_d:
        _n_d_panels(axes, runs, fit, profiles, allocations)
    else:
        _curve_panels(axes, runs, fit)
    ax = axes[-1]
    x_name = "C" if runs.has("C") else fit.law.variables[0]
    residual = 100.0 * (np.exp(log_residuals(fit.law, runs)) - 1.0)
    ax.scatter(runs.values(x_name), residual, s=12, alpha=0.8)
    ax.axhline(0.0, color="k", lw=0.8)
    rmse = 100.0 * fit.goodness.rmse_log
    ax.axhspan(-rmse, rmse, color="0.85", zorder=0, label=f"±RMSE(log) = {rmse:.2f}%")
    ax.set_xscale("log")
    ax.set(xlabel=_LABELS[x_name], ylabel="predicted / observed - 1 (%)", title="residuals")
    ax.legend(fontsize=8)
    fig.suptitle(title or fit.law.describe(), fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def plot_learning_curves(runs: Runs, extrapolations: Sequence[Any], path: str | Path) -> Path:
    """Each curve, the part used for fitting, the fitted law and the predicted end."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    key = runs.frame["run"] if runs.has("run") else runs.frame["N"]
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(extrapolations)))
    for item, colour in zip(extrapolations, colours):
        rows = np.flatnonzero((key.astype(str) == item.run).to_numpy())
        steps, loss = runs.values("step")[rows], runs.values("loss")[rows]
        ax.plot(steps, loss, ".", color=colour, ms=3, alpha=0.6)
        grid = np.exp(np.linspace(np.log(steps.min()), np.log(item.final_step), 100))
        ax.plot(grid, item.law.predict(step=grid), "-", color=colour, lw=1)
        ax.axvline(item.fit_until_step, color=colour, lw=0.5, ls=":")
        ax.plot([item.final_step], [item.predicted_final], "x", color=colour, ms=8,
                label=f"{item.run}: {100 * item.relative_error:+.2f}% at the end")
    _log_axes(ax, runs.values("loss"))
    ax.set(xlabel="step", ylabel="loss", title="learning curves: fitted on the early part (dotted), end predicted (x)")
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=90)
