"""``polyformer models``: the default model of each pipeline task (:mod:`polyformer.pipelines.defaults`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``polyformer models defaults`` and ``polyformer models set-default TASK FOLDER``."""
    models = subparsers.add_parser(
        "models", help="the default model of each pipeline task",
        description="pipeline(task) without a model uses the task's default: a model folder made here (polyformer "
        "never downloads weights), copied in with set-default.")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = actions.add_parser("defaults", help="list the registered default models")
    listing.set_defaults(func=run_list_defaults)
    setting = actions.add_parser("set-default", help="copy a model folder in as a task's default")
    setting.add_argument("task", help="pipeline task, e.g. table-question-answering")
    setting.add_argument("folder", type=Path, help="model folder (config.json and weights), e.g. a recipe's --out")
    setting.set_defaults(func=run_set_default)


def run_list_defaults(args: argparse.Namespace) -> int:
    """Print every task's default model folder, and where defaults live."""
    from polyformer.pipelines.defaults import RECIPE_FOR_TASK, default_models, default_models_root

    found = default_models()
    print(f"default models live in {default_models_root()}")
    for task in sorted(set(RECIPE_FOR_TASK) | set(found)):
        where = str(found[task]) if task in found else f"(none; make one with: {RECIPE_FOR_TASK[task]})"
        print(f"  {task:<32} {where}")
    return 0


def run_set_default(args: argparse.Namespace) -> int:
    """Copy the folder in and say where it went."""
    from polyformer.pipelines.defaults import set_default_model

    target = set_default_model(args.task, args.folder)
    print(f"pipeline({args.task!r}) now uses {target} (a copy of {args.folder})")
    return 0
