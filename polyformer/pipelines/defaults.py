"""Default models: what ``pipeline(task)`` uses when no model is given.

``transformers`` downloads a default checkpoint per task; polyformer never downloads weights, so a
task's default is a model folder the user made here — usually by one of the training recipes —
and registered with :func:`set_default_model` (``polyformer models set-default TASK FOLDER``).
Registering *copies* the folder into ``$POLYFORMER_MODELS`` (default ``~/.cache/polyformer/models``),
so deleting or retraining the run folder later does not change the default under the user's feet.
The copy is made beside the target and renamed into place, so a reader never sees half a folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from polyformer.errors import CheckpointError, ConfigError
from polyformer.files import fsync_dir

__all__ = ["RECIPE_FOR_TASK", "default_model", "default_models", "default_models_root", "set_default_model"]

#: the training recipe that makes a model for each task, named in the error when no default exists
RECIPE_FOR_TASK: dict[str, str] = {
    "image-classification": "polyformer train vit-mnist --out runs/vit-mnist",
    "image-completion": "polyformer train igpt-mnist --out runs/igpt-mnist",
    "text-classification": "polyformer train text-topics --out runs/text-topics",
    "text-generation": "polyformer train lm --data DATA --out runs/lm",
    "zero-shot-image-classification": "polyformer train clip-shapes --out runs/clip-shapes",
    "video-classification": "polyformer train video-digits --out runs/video-digits",
    "table-question-answering": "polyformer train table-qa --out runs/table-qa",
}


def default_models_root() -> Path:
    """``$POLYFORMER_MODELS`` or ``~/.cache/polyformer/models``: one folder per task."""
    root = os.environ.get("POLYFORMER_MODELS")
    return Path(root) if root else Path.home() / ".cache" / "polyformer" / "models"


def _check_task(task: str) -> None:
    from polyformer.pipelines import supported_tasks

    if task not in supported_tasks():
        raise ConfigError(f"unknown task {task!r}; supported tasks: {', '.join(supported_tasks())}")


def default_model(task: str) -> Path:
    """The folder registered as ``task``'s default; a :class:`ConfigError` that says how to make one
    when there is none."""
    _check_task(task)
    folder = default_models_root() / task
    if (folder / "config.json").is_file():
        return folder
    recipe = RECIPE_FOR_TASK.get(task, "polyformer train ... --out FOLDER")
    raise ConfigError(
        f"pipeline({task!r}) needs model=<a model folder or a loaded model>, and no default model is registered "
        f"for this task (polyformer never downloads weights). Train one and register it: `{recipe}` then "
        f"`polyformer models set-default {task} FOLDER`; or pass model=FOLDER")


def default_models() -> dict[str, Path]:
    """Every task with a registered default, and its folder."""
    root = default_models_root()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and (p / "config.json").is_file()}


def set_default_model(task: str, folder: str | Path) -> Path:
    """Copy the model folder ``folder`` in as ``task``'s default (replacing any earlier one atomically);
    returns where it now lives. Only the files a pipeline loads are copied (no training checkpoints)."""
    _check_task(task)
    source = Path(folder)
    if not (source / "config.json").is_file():
        raise CheckpointError(f"{source} is not a model folder (no config.json); give the folder a recipe's --out "
                              "wrote, or one saved with save_pretrained")
    root = default_models_root()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{task}."))
    try:
        for path in source.iterdir():
            if path.is_file() and not path.name.startswith("."):  # the model's files, not the trainer's folders
                shutil.copy2(path, staging / path.name)
        target = root / task
        retired = root / f".{task}.old"
        shutil.rmtree(retired, ignore_errors=True)
        if target.exists():
            os.replace(target, retired)
        os.replace(staging, target)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(retired, ignore_errors=True)
    return target
