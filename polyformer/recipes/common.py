"""What the training recipes share: option checks, the trainer's settings, the run folder, metrics.

A recipe (:mod:`polyformer.recipes.vision`, :mod:`~polyformer.recipes.text`,
:mod:`~polyformer.recipes.clip`) trains on the one trainer and, given ``out``, writes a model
folder with ``metrics.json`` and keeps the trainer's run in ``out/training`` so that running it
again resumes; without ``out`` the run lives in a temporary folder.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from polyformer.attention import AttentionSpec
from polyformer.files import atomic_write_text
from polyformer.options import require
from polyformer.train import ModelSpec, TrainConfig, TrainResult, train
from polyformer.train.metrics import read_metrics

__all__ = ["TRAINING_FOLDER", "RunFolder", "attention_config", "check_common_options", "recipe_train_config",
           "train_with_history", "write_metrics"]

TRAINING_FOLDER = "training"  # the trainer's run (checkpoints, metrics.jsonl) inside a recipe's folder


def check_common_options(options: Any, name: str) -> None:
    """Check the fields every recipe's options have (``batch_size``, ``seed``, ``lr``,
    ``time_budget_s``, ``attention``), naming the options class ``name`` in the errors."""
    for field_name in ("batch_size", "seed"):
        value = getattr(options, field_name)
        require(isinstance(value, int) and value >= (0 if field_name == "seed" else 1),
                f"{name}.{field_name} must be a {'non-negative' if field_name == 'seed' else 'positive'} "
                f"integer, got {value!r}")
    require(options.lr > 0, f"{name}.lr must be positive, got {options.lr}")
    require(options.time_budget_s is None or options.time_budget_s > 0,
            f"{name}.time_budget_s must be positive or None, got {options.time_budget_s}")
    AttentionSpec.coerce(options.attention).build()  # unknown mechanisms and options fail now


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    """Write a recipe's ``metrics.json`` into its model folder ``out`` (atomically)."""
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def attention_config(attention: Any) -> dict[str, Any]:
    """The attention option as plain JSON (it is part of the model spec saved with checkpoints)."""
    spec = AttentionSpec.coerce(attention)
    return {"name": spec.name, "options": dict(spec.options)}


def recipe_train_config(options: Any, steps: int, eval_examples: int, tokens_per_example: int, run_dir: Path,
                        progress: bool) -> TrainConfig:
    """The trainer's settings of a recipe trained from scratch: its AdamW (beta2 0.98), a warmup of at
    most a fifth of the run, cosine to 10%, clipping at 1, evaluation on every test example at the
    end only. ``options`` gives ``batch_size``, ``lr``, ``warmup_steps``, ``weight_decay``, ``seed``."""
    return TrainConfig(
        total_steps=steps, batch_size=options.batch_size, seq_len=tokens_per_example, lr=options.lr,
        min_lr_ratio=0.1, warmup_steps=min(options.warmup_steps, steps // 5 + 1, steps - 1) if steps > 1 else 0,
        weight_decay=options.weight_decay, beta2=0.98, clip=1.0, eval_interval=0,
        eval_tokens=eval_examples * tokens_per_example, checkpoint_interval=0, keep_checkpoints=1,
        seed=options.seed, out_dir=str(run_dir), progress=progress,
    )


def train_with_history(spec: ModelSpec, train_set: Any, test_set: Any, size: int, config: TrainConfig,
                       time_budget_s: float | None) -> tuple[TrainResult, list[tuple[int, float]]]:
    """Train on the one trainer; returns its result (the model in eval mode) and the training loss
    every 10 steps (and at the last step), read back from the run's ``metrics.jsonl``."""
    result = train(spec, train_set, test_set, size, config, time_budget_s=time_budget_s)
    records = [r for r in read_metrics(Path(config.out_dir) / "metrics.jsonl") if r.get("kind") == "train"]
    history = [(r["step"] - 1, float(r["loss"])) for r in records
               if (r["step"] - 1) % 10 == 0 or r["step"] == records[-1]["step"]]
    result.model.eval()
    return result, history


class RunFolder:
    """``with RunFolder(out) as run_dir``: ``out/training`` when the recipe saves a folder, else a
    temporary folder removed afterwards."""

    def __init__(self, out: str | Path | None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="polyformer-recipe-") if out is None else None
        self.path = Path(self._tmp.name) if self._tmp else Path(out) / TRAINING_FOLDER

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: Any) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
