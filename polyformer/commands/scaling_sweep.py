"""``polyformer scaling sweep`` and the ``--runs STORE`` input of the other ``scaling`` actions.

The ``scaling`` command group lives in :mod:`polyformer.commands.scaling`; it adds the action
with :func:`add_sweep` and reads run stores through :func:`add_store_arguments` /
:func:`load_store_runs`.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from polyformer.errors import ConfigError

_SUFFIXES = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}


def token_count(text: str) -> int:
    """``2M`` -> 2,000,000; ``500k``; ``1.5e6``."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKMBG]?)\s*", text)
    if not match:
        raise ConfigError(f"token budget {text!r}: write a number such as 2000000, 2M or 500k")
    return int(round(float(match.group(1)) * _SUFFIXES[match.group(2)]))


# ----- --runs STORE ------------------------------------------------------------------------------
def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """``--runs STORE`` (a run store), ``--sweep NAME``, ``--params non-embedding|total``."""
    parser.add_argument("--runs", type=Path, metavar="STORE",
                        help="read the finished runs of a run store (SQLite) written by `polyformer scaling sweep`")
    parser.add_argument("--sweep", default=None, help="with --runs: only the runs of this sweep (default: all)")
    parser.add_argument("--params", default="non-embedding", choices=["non-embedding", "total"],
                        help="with --runs: N counts parameters without embeddings (Kaplan; default) or all")


def load_store_runs(args: argparse.Namespace) -> Any:
    """The runs table (run, N, D, C = 6 N D, loss) of the store named by ``--runs``; for
    ``scaling curves`` one row per training step (with ``step``)."""
    from polyformer.scaling.store import read_store_runs

    curves = getattr(args, "scaling_command", None) == "curves"
    return read_store_runs(args.runs, sweep=args.sweep, params=args.params.replace("-", "_"), curves=curves)


# ----- sweep -------------------------------------------------------------------------------------
def add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="train a ladder of GPT models and record every run in a SQLite run store",
        description="Train a ladder of models on a prepared token folder (`polyformer data prepare`) and "
        "record each run (config, N, D, FLOPs, loss curve, final validation loss) in --store. Running the "
        "same command again skips finished runs and resumes an interrupted one. Fit the law with "
        "`polyformer scaling fit --runs STORE --law power`.",
    )
    p.add_argument("--data", type=Path, required=True, help="prepared token folder")
    p.add_argument("--store", type=Path, default=Path("runs/scaling/runs.sqlite"),
                   help="run store (SQLite file; default runs/scaling/runs.sqlite)")
    p.add_argument("--ladder", default="default",
                   help="default (6 sizes, ~40k-400k parameters), quick (3 tiny runs), or a plan JSON file")
    p.add_argument("--name", default=None, help="sweep name in the store (default: the ladder's name)")
    p.add_argument("--sizes", default=None, help="model sizes n_layers x d_model x n_heads, comma separated "
                   "(e.g. 2x64x2,4x128x4); replaces the ladder's sizes")
    p.add_argument("--tokens", default=None, help="token budgets, comma separated (e.g. 1M,4M): every size on each")
    p.add_argument("--tokens-per-param", type=float, default=None, help="budget = this x non-embedding parameters")
    for flag, kind in (("--lr", float), ("--batch-size", int), ("--seq-len", int), ("--eval-tokens", int),
                       ("--evals-per-run", int), ("--seed", int)):
        p.add_argument(flag, type=kind, default=None, help="overrides the ladder's value")
    p.add_argument("--family", default=None, help="model family (default gpt) or module:function")
    p.add_argument("--attention", default=None, help="attention mechanism of every model (default dense)")
    p.add_argument("--work-dir", type=Path, default=None, help="run folders (default beside the store)")
    p.add_argument("--plot", type=Path, default=None, help="after the sweep, draw loss against compute with the fit")
    p.add_argument("--dry-run", action="store_true", help="print the planned runs and stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_sweep_command)


def plan_from_args(args: argparse.Namespace):
    """The ladder named by --ladder, with the options given on the command line applied."""
    import dataclasses

    from polyformer.scaling.sweep import LADDERS, ModelSize, read_plan

    if args.ladder in LADDERS:
        plan = LADDERS[args.ladder]()
    elif Path(args.ladder).is_file():
        plan = read_plan(args.ladder)
    else:
        raise ConfigError(f"--ladder {args.ladder!r} is neither {' nor '.join(LADDERS)} nor a plan JSON file")
    values = plan.to_dict()
    values["sizes"] = list(plan.sizes)
    if args.sizes:
        values["sizes"] = [ModelSize.parse(s) for s in args.sizes.split(",") if s.strip()]
    if args.tokens and args.tokens_per_param is not None:
        raise ConfigError("give --tokens or --tokens-per-param, not both")
    if args.tokens:
        values["tokens"], values["tokens_per_param"] = [token_count(t) for t in args.tokens.split(",")], None
    if args.tokens_per_param is not None:  # 0 or less is refused by SweepPlan, not ignored
        values["tokens"], values["tokens_per_param"] = None, args.tokens_per_param
    for name in ("lr", "batch_size", "seq_len", "eval_tokens", "evals_per_run", "seed", "family"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.attention:
        values["model_config"] = {**values.get("model_config", {}), "attention": args.attention}
    return dataclasses.replace(plan, **{k: v for k, v in values.items()})


def run_sweep_command(args: argparse.Namespace) -> int:
    from polyformer.data.prepare import open_dataset
    from polyformer.scaling.sweep import plan_runs, run_sweep

    plan = plan_from_args(args)
    name = args.name or (args.ladder if args.ladder in ("default", "quick") else Path(args.ladder).stem)
    if args.dry_run:
        dataset = open_dataset(args.data)
        work = args.work_dir or Path("runs")
        total = 0.0
        print(f"{'run':<22} {'N (non-emb.)':>12} {'N (all)':>10} {'D (tokens)':>12} {'C = 6ND':>10} {'steps':>7}")
        for run in plan_runs(plan, dataset.vocab_size, Path(work)):
            total += run.flops
            print(f"{run.name:<22} {run.params_non_embedding:>12,} {run.params:>10,} {run.tokens:>12,} "
                  f"{run.flops:>10.3g} {run.train.total_steps:>7}")
        print(f"total C = {total:.3g} FLOPs; training split {len(dataset.train):,} tokens")
        return 0
    result = run_sweep(plan, args.data, args.store, sweep=name, work_dir=args.work_dir,
                       progress=not args.no_progress)
    finished = [r for r in result.runs if r.status == "finished"]
    print(f"sweep {name!r}: {len(result.trained)} trained, {len(result.skipped)} already finished, "
          f"{len(result.failed)} failed, {result.seconds:.0f} s; store {args.store}")
    for run in finished:
        print(f"  {run.name:<22} N={run.params_non_embedding:>9,} D={run.tokens:>11,} C={run.flops:.3g} "
              f"loss {run.final_val_loss:.4f}")
    if args.plot and len(finished) >= 4:
        from polyformer.scaling.sweep_report import fit_sweep, plot_sweep

        fit = fit_sweep(args.store, sweep=name)
        plot_sweep(args.store, args.plot, sweep=name, fit=fit)
        print(json.dumps(fit.summary(), indent=1, default=float))
        print(f"plot written to {args.plot}")
    elif args.plot:
        print("(no plot: a fit needs at least 4 finished runs)")
    return 1 if result.failed else 0
