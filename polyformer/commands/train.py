"""``polyformer train``: the group of training recipes, and its ``lm`` recipe.

``polyformer train lm`` trains a language model on a prepared token folder, in one process or
under torchrun. Every field of :class:`~polyformer.train.TrainConfig` is an option
(``--total-steps``, ``--lr``, ``--bf16`` ...); ``--nproc 2`` runs data-parallel over two
processes (DDP, gloo). A run that was stopped is resumed from its newest good checkpoint by
running the same command again. A GPT run ends with ``<out>/model``: config.json,
model.safetensors and the tokenizer files, which ``pipeline("text-generation", model=...)`` takes. Other modules add their recipes to the same group
(``polyformer train vit-mnist`` ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from polyformer.errors import ConfigError


def train_group(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The recipe sub-commands of ``polyformer train`` (made here unless another module made them)."""
    train = subparsers.choices.get("train")
    if train is None:
        train = subparsers.add_parser("train", help="train a model: lm (a language model on a token folder), "
                                      "and other recipes (see `polyformer train --help`)")
        train.set_defaults(func=lambda args: (train.print_help(), 2)[1])
        train.recipes = train.add_subparsers(dest="recipe", metavar="RECIPE")  # type: ignore[attr-defined]
    recipes = getattr(train, "recipes", None)
    if recipes is None:
        raise ConfigError("another command defines `polyformer train` without recipe sub-commands")
    return recipes


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from polyformer.train.config import TrainConfig

    parser = train_group(subparsers).add_parser(
        "lm",
        help="train a language model on a prepared token folder (checkpoints, exact resume, DDP)",
        description="Train on a folder made by `polyformer data prepare`. Re-running the same command "
        "resumes from the newest good checkpoint in --out.",
    )
    parser.add_argument("--data", type=Path, required=True, help="prepared folder (train.bin, val.bin)")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, metrics.jsonl)")
    parser.add_argument("--model", default="gpt", help="model family of a token task: gpt (default), bert "
                        "(when installed) or package.module:function")
    parser.add_argument("--model-config", default="{}",
                        help='model config as JSON or @file.json, e.g. \'{"n_layers": 4, "d_model": 128, "n_heads": 4}\'')
    parser.add_argument("--task-options", default="{}",
                        help='options of the family\'s task as JSON, e.g. \'{"mask_token_id": 4}\' for bert (masked-lm)')
    parser.add_argument("--config", type=Path, default=None, help="training config JSON (fields below override it)")
    parser.add_argument("--nproc", type=int, default=1, help="processes for data-parallel training (torchrun)")
    parser.add_argument("--no-resume", action="store_true", help="refuse to continue a run already in --out")
    group = parser.add_argument_group("training config")
    for field in dataclasses.fields(TrainConfig):
        if field.name == "out_dir":
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(field.type), str)
            group.add_argument(flag, type=kind, default=None, help=f"default {field.default!r}")
    parser.set_defaults(func=run)


def _json_argument(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{what}: expected JSON or @file.json ({error})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def config_from_args(args: argparse.Namespace):
    """The TrainConfig given by --config and the per-field options."""
    from polyformer.train.config import TrainConfig

    values: dict[str, Any] = _json_argument(f"@{args.config}", "--config") if args.config else {}
    for field in dataclasses.fields(TrainConfig):
        given = getattr(args, field.name, None)
        if given is not None and field.name != "out_dir":
            values[field.name] = given
    values["out_dir"] = str(args.out)
    return TrainConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from polyformer.train import distributed
    from polyformer.train.launch import Launch, run_launch
    from polyformer.train.models import ModelSpec, config_defaults
    from polyformer.train.trainer import resume_point

    if args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {args.nproc}")
    train = config_from_args(args)
    model_config = _json_argument(args.model_config, "--model-config")
    for name, value in config_defaults(args.model, train.seq_len).items():
        model_config.setdefault(name, value)  # e.g. GPT: a position table as long as the sequences
    launch = Launch(
        data=str(args.data),
        model=ModelSpec(args.model, model_config, task_options=_json_argument(args.task_options, "--task-options")),
        train=train,
        resume=not args.no_resume,
    )
    from polyformer.data.prepare import open_dataset

    open_dataset(args.data)  # fail here, before any process starts, if the data is unusable
    # Refuse an incompatible resume here too: before launch.json is replaced, and as one clear
    # message rather than a trace from inside each torchrun worker.
    resume_point(args.out, train, launch.model, args.nproc, launch.resume)
    path = launch.write()
    if args.nproc > 1:
        status = distributed.launch(args.nproc, [str(path)])
        if status != 0:
            print(f"polyformer train: torchrun exited with status {status}")
        return status
    result = run_launch(launch)
    print(f"final validation loss {result.final_val_loss:.4f} after {result.steps} steps ({result.tokens:,} tokens) "
          f"in {result.seconds:.1f} s; run folder {result.out_dir}")
    from polyformer.train.export import MODEL_FOLDER

    if (result.out_dir / MODEL_FOLDER / "config.json").is_file():
        print(f"model folder (for pipeline): {result.out_dir / MODEL_FOLDER}")
    return 0
