"""Reading and writing weight files: safetensors (also sharded) or a ``pytorch_model.bin``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from polyformer.errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def load_state_dict(folder: str | Path) -> tuple[dict[str, Tensor], Path]:
    """The weights in ``folder`` and the file they came from; clear errors for missing or corrupt files."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        path = folder / name
        if path.exists():
            break
    else:
        raise CheckpointError(f"{folder}: no weights found; expected one of {', '.join(WEIGHT_FILES)}")
    try:
        if name == "model.safetensors":
            from safetensors.torch import load_file

            return load_file(str(path)), path
        if name.endswith(".index.json"):
            from safetensors.torch import load_file

            index = json.loads(path.read_text())
            state: dict[str, Tensor] = {}
            for shard in sorted(set(index["weight_map"].values())):
                state.update(load_file(str(folder / shard)))
            return state, path
        # weights_only: a pickle from an untrusted source cannot run code
        return torch.load(path, map_location="cpu", weights_only=True), path
    except CheckpointError:
        raise
    except Exception as error:  # corrupt or truncated files raise many different types
        raise CheckpointError(f"{path}: cannot read the weights ({type(error).__name__}: {error}); "
                              "the file may be truncated or corrupt — download or save it again") from None


def save_state_dict(state: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``state`` as safetensors atomically (a temporary file renamed into place)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # safetensors refuses tensors that share memory (tied weights): store each once, contiguous.
        save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, tmp,
                  metadata={"format": "pt", **(metadata or {})})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_config(folder: str | Path) -> dict:
    """``folder/config.json`` as a dict, with clear errors."""
    path = Path(folder) / "config.json"
    if not Path(folder).exists():
        raise CheckpointError(f"{folder}: no such model folder")
    if not path.exists():
        raise CheckpointError(f"{path} is missing: a model folder needs config.json beside its weights")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error})") from None
