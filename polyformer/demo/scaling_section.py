"""Demo section: the Chinchilla law fitted to Epoch AI's digitised runs, and the GPT-3 cost estimate."""

from __future__ import annotations

import time
from pathlib import Path

from polyformer.demo.report import Report

DATA_FILE = "chinchilla_svg_extracted.csv"
# Quick mode: 3 values per fitting parameter (243 starts) instead of Chinchilla's 4,500.
_QUICK_GRID = {"a": (0.0, 10.0, 20.0), "b": (0.0, 10.0, 20.0), "e": (-1.0, 0.0, 1.0),
               "alpha": (0.0, 1.0, 2.0), "beta": (0.0, 1.0, 2.0)}


def shared_data_file() -> Path:
    """Where the shared data folder keeps Epoch AI's file: ``../shared/data`` beside the repository."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / DATA_FILE


def _load_runs() -> tuple[object, str]:
    from polyformer.scaling import read_runs
    from polyformer.scaling.references import EPOCH_CHINCHILLA
    from polyformer.scaling.synthetic import isoflop_runs

    path = shared_data_file()
    if path.is_file():
        runs = read_runs(path).drop_highest_loss(5)
        return runs, (f"{len(runs)} training runs digitised from Hoffmann et al. (2022), Figure 4, by Besiroglu et al. "
                      "(2024); the 5 highest-loss runs dropped as they did.")
    runs = isoflop_runs(EPOCH_CHINCHILLA, per_budget=12, noise=0.01, seed=0)
    return runs, (f"The digitised Chinchilla data ({DATA_FILE}) was not found beside the repository, so these are "
                  f"{len(runs)} synthetic IsoFLOP runs drawn from Besiroglu et al.'s law with 1% noise.")


def _fit_section(report: Report, quick: bool) -> None:
    from polyformer.scaling import FitOptions, envelope_approach, fit_law, isoflop_approach, parametric_approach
    from polyformer.scaling.plots import plot_fit
    from polyformer.scaling.references import EPOCH_CHINCHILLA, EPOCH_CHINCHILLA_STANDARD_ERRORS, HOFFMANN_CHINCHILLA

    section = report.section("Scaling laws: fitting the Chinchilla law")
    runs, provenance = _load_runs()
    section.text(provenance)
    options = FitOptions(grid=_QUICK_GRID if quick else None)
    n_boot = 100 if quick else 1000
    started = time.perf_counter()
    fit = fit_law(runs, "chinchilla", options, bootstrap=n_boot, seed=0)
    elapsed = time.perf_counter() - started
    section.text(
        "L(N, D) = E + A/N^alpha + B/D^beta fitted as Hoffmann et al. describe and Besiroglu et al. replicate: "
        "Huber loss (delta = 1e-3) of log-loss residuals, summed over runs, in the log-sum-exp form, minimised "
        f"by L-BFGS from {fit.n_starts} starts ({'a coarse 3-value grid in quick mode' if quick else 'Chinchilla grid'}), "
        f"best minima polished by Newton's method to gradient {fit.grad_norm:.1e}; {n_boot} bootstrap refits. "
        f"Fit and bootstrap took {elapsed:.1f} s."
    )
    se = fit.bootstrap.standard_errors()
    intervals = fit.bootstrap.intervals()
    rows = []
    for name, value in fit.law.parameters().items():
        low, high = intervals[name]
        rows.append([name, value, se[name], f"[{low:.4g}, {high:.4g}]",
                     EPOCH_CHINCHILLA.parameters()[name], EPOCH_CHINCHILLA_STANDARD_ERRORS[name],
                     HOFFMANN_CHINCHILLA.parameters()[name]])
    section.table(["parameter", "this fit", "bootstrap s.e.", "95% interval", "Besiroglu et al.", "their s.e.",
                   "Hoffmann et al. (printed)"], rows)
    approaches = [envelope_approach(runs)]
    allocation, profiles = isoflop_approach(runs)
    approaches += [allocation, parametric_approach(fit.law)]
    section.table(["approach", "a (N_opt ∝ C^a)", "b (D_opt ∝ C^b)"], [[a.approach, a.a, a.b] for a in approaches])
    plot_fit(runs, fit, report.path("scaling_chinchilla_fit.png"), profiles=profiles, allocations=approaches)
    section.figure("scaling_chinchilla_fit.png", "The fitted law against the runs, IsoFLOP profiles, the "
                   "compute-optimal frontier from the three approaches, and residuals.")
    for warning in fit.warnings:
        section.text(f"Warning: {warning}")


def _cost_section(report: Report) -> None:
    from polyformer.scaling import Hardware, estimate_cost, plan_compute, training_flops
    from polyformer.scaling import references as ref

    section = report.section("Scaling laws: what GPT-3 cost, and what a compute-optimal model would be")
    hardware = Hardware(peak_flops=ref.V100_SUSTAINED_FLOPS, price_per_hour=ref.V100_PRICE_PER_HOUR)
    rows = []
    for label, flops in (("6 N D", training_flops(ref.GPT3_PARAMS, ref.GPT3_TOKENS)),
                         ("published", ref.GPT3_PUBLISHED_FLOPS)):
        estimate = estimate_cost(flops, hardware)
        rows.append([label, f"{flops:.3g}", f"{estimate.device_years:.1f}", f"${estimate.cost / 1e6:.2f}M"])
    section.text(
        "GPT-3 175B trained on 300B tokens; V100 GPUs at 28 TFLOP/s sustained and about $1.5 per GPU-hour "
        f"(the chapter's assumptions; it quotes ~{ref.GPT3_PUBLISHED_GPU_YEARS:.0f} GPU-years and "
        f"~${ref.GPT3_PUBLISHED_COST / 1e6:.1f}M)."
    )
    section.table(["FLOPs from", "training FLOPs", "V100-years", "cost"], rows)
    plan = plan_compute(ref.EPOCH_CHINCHILLA, [ref.GPT3_PUBLISHED_FLOPS])[0]
    section.table(
        ["model", "parameters", "tokens", "tokens per parameter", "predicted loss"],
        [["GPT-3", f"{ref.GPT3_PARAMS:.3g}", f"{ref.GPT3_TOKENS:.3g}", ref.GPT3_TOKENS / ref.GPT3_PARAMS,
          float(ref.EPOCH_CHINCHILLA.predict(N=ref.GPT3_PARAMS, D=ref.GPT3_TOKENS))],
         ["compute-optimal, same FLOPs", f"{plan.N:.3g}", f"{plan.D:.3g}", plan.tokens_per_parameter, plan.loss]],
    )
    section.text("Losses from Besiroglu et al.'s Chinchilla law (its data set, not GPT-3's): with the same compute, a "
                 "smaller model trained on more tokens reaches a lower loss.")


def add_section(report: Report, quick: bool) -> None:
    """The Chinchilla fit with its plot, the three approaches, and the GPT-3 cost estimate."""
    _fit_section(report, quick)
    _cost_section(report)
