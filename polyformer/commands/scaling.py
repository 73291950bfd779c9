"""``polyformer scaling``: fit scaling laws, predict, plan compute-optimal training, estimate cost.

Sub-commands are added by the functions in ``_SUBCOMMANDS``; runs come from the sources added
by :func:`add_runs_source` and read by :func:`load_runs` (a file today; a run store can join).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable

from polyformer.errors import ConfigError

_SUFFIXES = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15}


def quantity(text: str) -> float:
    """A positive number, optionally with a suffix: ``175e9``, ``175B``, ``1.4T``, ``70M``, ``3.14e23``."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKMBGTP]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a positive number such as 175e9 or 175B, got {text!r}")
    value = float(match.group(1)) * _SUFFIXES.get(match.group(2), 1.0)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _grid_entry(text: str) -> tuple[str, tuple[float, ...]]:
    name, _, values = text.partition("=")
    try:
        parsed = tuple(float(v) for v in values.split(",") if v.strip())
    except ValueError:
        parsed = ()
    if not name or not parsed:
        raise argparse.ArgumentTypeError(f"expected NAME=v1,v2,... (e.g. alpha=0,0.5,1), got {text!r}")
    return name.strip(), parsed


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _print_json(obj: Any) -> None:
    print(json.dumps(_clean(obj), indent=1))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


# ----- where runs come from ---------------------------------------------------------------------
def add_runs_source(parser: argparse.ArgumentParser) -> None:
    """Arguments naming the runs to use (a table file)."""
    parser.add_argument("file", nargs="?", type=Path,
                        help="runs table: CSV, Parquet or JSON Lines (columns N/params, D/tokens, C/flops, loss, step)")
    parser.add_argument("--drop-highest-loss", type=int, default=0, metavar="K",
                        help="ignore the K runs with the highest loss (outliers; Besiroglu et al. drop 5)")


def load_runs(args: argparse.Namespace) -> Any:
    """The runs named by :func:`add_runs_source` arguments, validated."""
    from polyformer.scaling.runs import read_runs

    if args.file is None:
        raise ConfigError("give a runs file (CSV, Parquet or JSON Lines)")
    if args.drop_highest_loss < 0:
        raise ConfigError(f"--drop-highest-loss must be >= 0, got {args.drop_highest_loss}")
    return read_runs(args.file).drop_highest_loss(args.drop_highest_loss)


def _fit_options(args: argparse.Namespace) -> Any:
    from polyformer.scaling.fit import FitOptions

    return FitOptions(delta=args.delta, grid=dict(args.grid) if args.grid else None, progress=sys.stderr.isatty())


def _check_output(path: Path | None, what: str) -> None:
    """Fail before any work if an output file could not be written."""
    if path is not None and path.exists() and path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a folder; give a file name")


# ----- fit -------------------------------------------------------------------------------------------
def _add_fit(sub: argparse._SubParsersAction) -> None:
    from polyformer.scaling.laws import list_laws

    p = sub.add_parser("fit", help="fit a scaling law to runs (Huber loss, grid of L-BFGS starts, bootstrap)")
    add_runs_source(p)
    p.add_argument("--law", default="chinchilla", choices=list_laws(), help="law to fit (default chinchilla)")
    p.add_argument("--variable", default="C", choices=["N", "D", "C", "step"],
                   help="variable of the single-variable laws power / pure-power (default C)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="B", help="bootstrap refits for intervals (e.g. 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap resampling seed")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--delta", type=float, default=1e-3, help="Huber threshold on log-loss residuals (default 1e-3)")
    p.add_argument("--grid", type=_grid_entry, action="append", metavar="NAME=v1,v2,...",
                   help="initial values of one fitting parameter (repeatable); default: the law's grid")
    p.add_argument("--holdout", choices=["largest"], help="fit without the largest runs and report the error on them")
    p.add_argument("--holdout-fraction", type=float, default=0.1, help="fraction of runs held out (default 0.1)")
    p.add_argument("--holdout-by", default="C", choices=["N", "D", "C"], help="size used to rank runs (default C)")
    p.add_argument("--plot", type=Path, help="write a PNG of the fit")
    p.add_argument("--out", type=Path, help="write the fit (with bootstrap samples) as JSON, for `scaling predict`")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=_run_fit)


def _run_fit(args: argparse.Namespace) -> int:
    from polyformer.scaling.extrapolate import holdout_largest
    from polyformer.scaling.fit import fit_law

    for path, what in ((args.plot, "--plot"), (args.out, "--out")):
        _check_output(path, what)
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    runs = load_runs(args)
    options = _fit_options(args)
    context = {"variable": args.variable} if args.law in ("power", "pure-power") else {}
    if args.holdout:
        fit = holdout_largest(runs, args.law, options, fraction=args.holdout_fraction, by=args.holdout_by,
                              bootstrap=args.bootstrap, seed=args.seed, level=args.level, **context)
    else:
        fit = fit_law(runs, args.law, options, bootstrap=args.bootstrap, seed=args.seed, level=args.level, **context)
    if args.plot:
        _plot_fit(runs, fit, args.plot)
    if args.out:
        fit.save(args.out)
    if args.json:
        _print_json(fit.to_dict(with_samples=False))
    else:
        _print_fit(fit)
        for path, what in ((args.plot, "plot"), (args.out, "fit")):
            if path:
                print(f"{what} written to {path}")
    return 0


def _plot_fit(runs: Any, fit: Any, path: Path) -> None:
    from polyformer.errors import DataError
    from polyformer.scaling.approaches import isoflop_approach
    from polyformer.scaling.plots import plot_fit

    profiles, allocations = None, []
    if set(fit.law.variables) == {"N", "D"} and runs.has("C"):
        try:
            allocation, profiles = isoflop_approach(runs)
            allocations.append(allocation)
        except DataError:
            profiles = None  # no IsoFLOP design in these runs: the panel says so
    plot_fit(runs, fit, path, profiles=profiles, allocations=allocations)


def _print_fit(fit: Any) -> None:
    law = fit.law
    print(f"law: {law.name}: {law.formula}" + (f"  [variable {law.variable}]" if hasattr(law, "variable") else ""))
    se = fit.bootstrap.standard_errors() if fit.bootstrap else {}
    intervals = fit.bootstrap.intervals() if fit.bootstrap else {}
    header = f"  {'parameter':<10} {'value':>12}"
    if fit.bootstrap:
        header += f" {'std err':>12} {f'{fit.bootstrap.level:.0%} interval':>28}"
    print(header)
    for name, value in law.parameters().items():
        line = f"  {name:<10} {_fmt(value):>12}"
        if fit.bootstrap:
            low, high = intervals[name]
            line += f" {_fmt(se[name]):>12} {f'[{_fmt(low)}, {_fmt(high)}]':>28}"
        print(line)
    exponents = fit.to_dict(with_samples=False).get("allocation")
    if exponents:
        print(f"compute-optimal: N_opt ∝ C^{exponents['a']:.4f}, D_opt ∝ C^{exponents['b']:.4f}")
    g = fit.goodness
    print(f"fit: {g.n_points} points, RMSE(log loss) {g.rmse_log:.4g}, RMSE {g.rmse:.4g}, worst error {100 * g.max_abs_rel_error:.2f}%")
    print(f"optimiser: {fit.n_starts} starts ({fit.n_starts_converged} converged), objective {fit.objective:.6g}, "
          f"gradient {fit.grad_norm:.2g} (tolerance {fit.gradient_tolerance:.2g}): "
          + ("converged" if fit.converged else "NOT converged") + f", {fit.seconds:.1f} s")
    if fit.bootstrap:
        print(f"bootstrap: {fit.bootstrap.n} refits, {fit.bootstrap.converged_fraction:.0%} converged, {fit.bootstrap.seconds:.1f} s")
    if fit.holdout:
        h = fit.holdout
        print(f"held out {len(h.rows)} runs with {h.by} >= {h.threshold:.3g}: mean |error| {100 * h.mean_abs_rel_error:.2f}%, "
              f"worst {100 * h.max_abs_rel_error:.2f}%")
        for row in h.rows:
            where = ", ".join(f"{k}={row[k]:.3g}" for k in law.variables)
            print(f"  {where}: observed {row['observed']:.4g}, predicted {row['predicted']:.4g} ({100 * row['relative_error']:+.2f}%)")
    for note in fit.notes:
        print(f"note: {note}")
    for warning in fit.warnings:
        print(f"warning: {warning}")


# ----- predict ----------------------------------------------------------------------------------------
def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predicted loss (with interval) from a saved fit")
    p.add_argument("fit", type=Path, help="fit JSON written by `polyformer scaling fit --out`")
    p.add_argument("--params", type=quantity, help="parameters N (e.g. 70B)")
    p.add_argument("--tokens", type=quantity, help="training tokens D (e.g. 1.4T)")
    p.add_argument("--flops", type=quantity, help="training FLOPs C (alone: at the compute-optimal allocation)")
    p.add_argument("--steps", type=quantity, help="optimisation steps (learning-curve laws)")
    p.add_argument("--level", type=float, help="interval level (default: the fit's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from polyformer.scaling.extrapolate import predict_loss
    from polyformer.scaling.result import ScalingFit

    fit = ScalingFit.load(args.fit)
    given = {"N": args.params, "D": args.tokens, "C": args.flops, "step": args.steps}
    prediction = predict_loss(fit, level=args.level, **{k: v for k, v in given.items() if v is not None})
    if args.json:
        _print_json({"law": fit.law.name, **prediction.to_dict()})
        return 0
    where = ", ".join(f"{k} = {v:.4g}" for k, v in prediction.inputs.items())
    line = f"predicted loss {prediction.loss:.4f} at {where}"
    if prediction.interval:
        line += f"  ({prediction.level:.0%} interval {prediction.interval[0]:.4f} to {prediction.interval[1]:.4f})"
    print(line)
    if prediction.note:
        print(f"note: {prediction.note}")
    return 0


# ----- plan ---------------------------------------------------------------------------------------------
def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="compute-optimal N and D for FLOP budgets")
    p.add_argument("--flops", type=quantity, nargs="+", required=True, help="FLOP budget(s), e.g. 1e23")
    p.add_argument("--fit", type=Path, help="fit JSON (default: Besiroglu et al.'s Chinchilla refit)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    from polyformer.scaling.planning import plan_compute
    from polyformer.scaling.references import EPOCH_CHINCHILLA
    from polyformer.scaling.result import ScalingFit

    if args.fit:
        fit = ScalingFit.load(args.fit)
        law, source = fit.law, str(args.fit)
        samples = list(fit.bootstrap.laws(law)) if fit.bootstrap else None
        level = fit.bootstrap.level if fit.bootstrap else 0.95
    else:
        law, source, samples, level = EPOCH_CHINCHILLA, "Besiroglu et al. 2024 refit of Chinchilla", None, 0.95
    plans = plan_compute(law, args.flops, bootstrap_laws=samples, level=level)
    if args.json:
        _print_json({"law": law.to_dict(), "source": source, "plans": [p.to_dict() for p in plans]})
        return 0
    print(f"law: {law.describe()}  [{source}]")
    print(f"  {'FLOPs':>10} {'N_opt':>10} {'D_opt':>10} {'tokens/param':>13} {'loss':>8}  method")
    for plan in plans:
        print(f"  {plan.flops:>10.3g} {plan.N:>10.3g} {plan.D:>10.3g} {plan.tokens_per_parameter:>13.1f} {plan.loss:>8.4f}  {plan.method}")
        if plan.interval:
            iv = plan.interval
            print(f"  {'':>10} [{iv['N'][0]:.3g}, {iv['N'][1]:.3g}] [{iv['D'][0]:.3g}, {iv['D'][1]:.3g}] "
                  f"({level:.0%} bootstrap intervals)")
    return 0


# ----- cost ---------------------------------------------------------------------------------------------
def _add_cost(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost", help="training FLOPs, time and cost on given hardware")
    p.add_argument("--params", type=quantity, help="parameters N (e.g. 175B)")
    p.add_argument("--tokens", type=quantity, help="training tokens D (e.g. 300B)")
    p.add_argument("--flops", type=quantity, help="training FLOPs (overrides 6 N D)")
    p.add_argument("--n-layer", type=int, help="layers (with --n-ctx and --d-attn: count attention FLOPs)")
    p.add_argument("--n-ctx", type=int, help="context length")
    p.add_argument("--d-attn", type=int, help="attention width (d_model for GPT)")
    p.add_argument("--gpu-flops", type=quantity, required=True, help="FLOP/s of one device (peak, or sustained with --utilisation 1)")
    p.add_argument("--utilisation", type=float, default=1.0, help="fraction of --gpu-flops achieved (default 1)")
    p.add_argument("--gpus", type=int, default=1, help="number of devices (sets the wall-clock time)")
    p.add_argument("--price", type=float, help="price per device-hour")
    p.add_argument("--power-watts", type=float, help="power per device (W), for energy")
    p.add_argument("--energy-price", type=float, help="price per kWh")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_cost)


def _run_cost(args: argparse.Namespace) -> int:
    from polyformer.scaling.cost import Hardware, estimate_cost, training_flops, training_flops_with_attention

    shape = (args.n_layer, args.n_ctx, args.d_attn)
    if any(v is not None for v in shape) and not all(v is not None for v in shape):
        raise ConfigError("give all of --n-layer, --n-ctx and --d-attn to count attention FLOPs, or none")
    if args.flops is not None:
        flops, method = args.flops, "given"
    elif args.params is None or args.tokens is None:
        raise ConfigError("give --params and --tokens (or --flops)")
    elif all(v is not None for v in shape):
        flops = training_flops_with_attention(args.params, args.tokens, *shape)  # type: ignore[arg-type]
        method = "3 D (2 N + 2 n_layer n_ctx d_attn)"
    else:
        flops, method = training_flops(args.params, args.tokens), "6 N D"
    hardware = Hardware(peak_flops=args.gpu_flops, utilisation=args.utilisation, count=args.gpus,
                        price_per_hour=args.price, power_watts=args.power_watts, energy_price_per_kwh=args.energy_price)
    estimate = estimate_cost(flops, hardware)
    if args.json:
        _print_json({"flops_method": method, **estimate.to_dict(), "hardware": hardware.__dict__})
        return 0
    print(f"training FLOPs   {flops:.4g}  ({method})")
    print(f"device time      {estimate.device_hours:.4g} device-hours = {estimate.device_years:.1f} device-years "
          f"at {hardware.achieved_flops:.3g} FLOP/s each")
    print(f"wall clock       {estimate.wall_clock_days:.1f} days on {hardware.count} device(s)")
    if estimate.cost is not None:
        print(f"cost             {estimate.cost:,.0f} at {args.price} per device-hour")
    if estimate.energy_kwh is not None:
        energy = f"energy           {estimate.energy_kwh:,.0f} kWh"
        if estimate.energy_cost is not None:
            energy += f", {estimate.energy_cost:,.0f} at {args.energy_price} per kWh"
        print(energy)
    return 0


# ----- Chinchilla's three approaches ---------------------------------------------------------------------
def _add_approaches(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("approaches", help="Chinchilla's three estimates of N_opt ∝ C^a and D_opt ∝ C^b")
    add_runs_source(p)
    p.add_argument("--budget-tolerance", type=float, default=0.1, help="runs within ±this of a FLOP budget form a group (default 0.1)")
    p.add_argument("--delta", type=float, default=1e-3, help="Huber threshold of the parametric fit")
    p.add_argument("--grid", type=_grid_entry, action="append", metavar="NAME=v1,v2,...", help="initial values (parametric fit)")
    p.add_argument("--plot", type=Path, help="write a PNG with the fit, IsoFLOP profiles and frontiers")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_approaches)


def _run_approaches(args: argparse.Namespace) -> int:
    from polyformer.errors import DataError
    from polyformer.scaling.approaches import envelope_approach, isoflop_approach, parametric_approach
    from polyformer.scaling.fit import fit_law
    from polyformer.scaling.plots import plot_fit

    _check_output(args.plot, "--plot")
    runs = load_runs(args)
    results: dict[str, Any] = {}
    allocations, profiles = [], None
    for name, run in (("envelope", lambda: envelope_approach(runs, tolerance=args.budget_tolerance)),
                      ("isoflop", lambda: isoflop_approach(runs, tolerance=args.budget_tolerance))):
        try:
            outcome = run()
        except DataError as error:
            results[name] = {"error": str(error)}
            continue
        allocation = outcome[0] if isinstance(outcome, tuple) else outcome
        if isinstance(outcome, tuple):
            profiles = outcome[1]
        allocations.append(allocation)
        results[name] = allocation.to_dict()
    fit = fit_law(runs, "chinchilla", _fit_options(args))
    parametric = parametric_approach(fit.law)
    allocations.append(parametric)
    results["parametric"] = {**parametric.to_dict(), "fit": fit.to_dict(with_samples=False)}
    if args.plot:
        plot_fit(runs, fit, args.plot, profiles=profiles, allocations=allocations)
    if args.json:
        _print_json(results)
        return 0
    print(f"  {'approach':<12} {'a (N_opt ∝ C^a)':>16} {'b (D_opt ∝ C^b)':>16}  points")
    for name in ("envelope", "isoflop", "parametric"):
        entry = results[name]
        if "error" in entry:
            print(f"  {name:<12} {'-':>16} {'-':>16}  {entry['error']}")
        else:
            print(f"  {name:<12} {entry['a']:>16.4f} {entry['b']:>16.4f}  {len(entry['optima'])}")
    for allocation in allocations:
        for note in allocation.notes:
            print(f"note ({allocation.approach}): {note}")
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


# ----- learning curves -------------------------------------------------------------------------------------
def _add_curves(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curves", help="fit the early part of learning curves and predict their end")
    add_runs_source(p)
    p.add_argument("--fit-fraction", type=float, default=0.5, help="fit steps up to this fraction of each run (default 0.5)")
    p.add_argument("--plot", type=Path, help="write a PNG of the curves and predictions")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_curves)


def _run_curves(args: argparse.Namespace) -> int:
    from polyformer.scaling.extrapolate import extrapolate_learning_curves
    from polyformer.scaling.plots import plot_learning_curves

    _check_output(args.plot, "--plot")
    runs = load_runs(args)
    results = extrapolate_learning_curves(runs, fit_fraction=args.fit_fraction)
    if args.plot:
        plot_learning_curves(runs, results, args.plot)
    if args.json:
        _print_json({"fit_fraction": args.fit_fraction, "runs": [r.to_dict() for r in results]})
        return 0
    print(f"  {'run':<12} {'fit until':>10} {'final step':>11} {'observed':>9} {'predicted':>10} {'error':>8}")
    for r in results:
        print(f"  {r.run:<12} {r.fit_until_step:>10.4g} {r.final_step:>11.4g} {r.observed_final:>9.4f} "
              f"{r.predicted_final:>10.4f} {100 * r.relative_error:>+7.2f}%")
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


# Each adds one sub-command; a later source of runs or command adds its own line.
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_fit, _add_predict, _add_plan, _add_cost, _add_approaches, _add_curves,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scaling", help="scaling laws: fit, predict, plan compute-optimal training, cost")
    sub = parser.add_subparsers(dest="scaling_command", metavar="SUBCOMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
