"""Atomic, verified checkpoints that a killed run resumes from exactly.

A checkpoint is a folder ``step-00000200/`` holding

* ``model.safetensors`` — the weights (tied weights stored once);
* ``optimizer.pt`` — AdamW's state (moments and step counts), loaded with ``weights_only=True``;
* ``state.json`` — the step, the training config, the model spec and every process's RNG states;
* ``manifest.json`` — size and SHA-256 of each file above, written last.

It is written into a hidden temporary folder, every file is fsynced, and the folder is renamed
into place: a kill at any moment leaves either no checkpoint or a complete one. Older checkpoints
are removed only after a newer one is committed and read back. On resume the newest checkpoint
whose files match the manifest is used; one that does not (truncated, corrupted, half-copied) is
refused with a message, renamed ``step-XXXXXXXX.corrupt`` (kept for inspection, never deleted),
and the previous good checkpoint is used instead.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polyformer.files import atomic_write_text, fsync_dir, sha256_file
from polyformer.errors import CheckpointError

PREFIX = "step-"
MANIFEST = "manifest.json"
FILES = ("model.safetensors", "optimizer.pt", "state.json")


@dataclass
class Checkpoint:
    """A verified checkpoint folder and its parsed ``state.json``."""

    path: Path
    step: int
    state: dict[str, Any]


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def save_checkpoint(root: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically, verify it, then prune to ``keep`` newest."""
    from safetensors.torch import save_model

    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=1))
        manifest = {}
        for name in FILES:
            _fsync_file(tmp / name)
            manifest[name] = {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
        atomic_write_text(tmp / MANIFEST, json.dumps({"step": step, "files": manifest}, indent=1))
        fsync_dir(tmp)
        if final.exists():  # the same step written again (a run resumed from an earlier checkpoint)
            stale = root / f".stale-{final.name}-{os.getpid()}"
            os.replace(final, stale)
            os.replace(tmp, final)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    verify_checkpoint(final)  # read back what was committed before anything older goes
    _prune(root, keep)
    return final


def _committed(root: Path) -> list[tuple[int, Path]]:
    """Committed checkpoint folders (``step-NNNNNNNN``), oldest first."""
    found = []
    if root.is_dir():
        for path in root.iterdir():
            name = path.name
            if path.is_dir() and name.startswith(PREFIX) and name[len(PREFIX):].isdigit():
                found.append((int(name[len(PREFIX):]), path))
    return sorted(found)


def _prune(root: Path, keep: int) -> None:
    committed = _committed(root)
    for _, path in committed[: max(0, len(committed) - keep)]:
        shutil.rmtree(path, ignore_errors=True)
    for path in root.glob(".tmp-*"):  # left by a run killed while writing; never committed
        if path.is_dir() and not path.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(path, ignore_errors=True)


def verify_checkpoint(path: Path) -> Checkpoint:
    """Check every file against the manifest; raise CheckpointError naming what is wrong."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} has no {MANIFEST} (it was never completed)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {str(path)!r}: {MANIFEST} is unreadable ({error})") from None
    for name in FILES:
        entry = files.get(name) if isinstance(files, dict) else None
        file = path / name
        if entry is None:
            raise CheckpointError(f"checkpoint {str(path)!r}: {MANIFEST} does not list {name}")
        if not file.is_file():
            raise CheckpointError(f"checkpoint {str(path)!r}: {name} is missing")
        size = file.stat().st_size
        if size != entry.get("bytes"):
            raise CheckpointError(f"checkpoint {str(path)!r}: {name} has {size} bytes, the manifest says "
                                  f"{entry.get('bytes')} (truncated or overwritten)")
        if sha256_file(file) != entry.get("sha256"):
            raise CheckpointError(f"checkpoint {str(path)!r}: {name} does not match its SHA-256 checksum (corrupted)")
    try:
        state = json.loads((path / "state.json").read_text())
    except ValueError as error:
        raise CheckpointError(f"checkpoint {str(path)!r}: state.json is not valid JSON ({error})") from None
    return Checkpoint(path=path, step=int(state["step"]), state=state)


def find_resumable(root: Path, quarantine: bool = True) -> Checkpoint | None:
    """The newest checkpoint under ``root`` that verifies, or None when there is none at all.

    Each newer one that fails is reported on stderr and, with ``quarantine``, renamed
    ``<name>.corrupt`` so that it is kept but never chosen again. If checkpoints exist and none
    verifies, CheckpointError is raised rather than silently starting over.
    """
    committed = _committed(root)
    refused = []
    for _, path in reversed(committed):
        try:
            checkpoint = verify_checkpoint(path)
        except CheckpointError as error:
            refused.append(str(error))
            print(f"polyformer train: refusing {error}; falling back to the previous checkpoint", file=sys.stderr)
            if quarantine:
                target = path.with_name(path.name + ".corrupt")
                suffix = 1
                while target.exists():
                    target = path.with_name(f"{path.name}.corrupt{suffix}")
                    suffix += 1
                os.replace(path, target)
            continue
        return checkpoint
    if refused:
        raise CheckpointError(
            f"no usable checkpoint under {str(root)!r}: every one failed verification ({'; '.join(refused)}); "
            "start a new run in a new folder"
        )
    return None


def load_checkpoint(checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Load weights (strictly) and, if given, the optimiser state."""
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(checkpoint.path / "model.safetensors"), strict=False)
    except Exception as error:  # safetensors raises its own error types for a malformed header
        raise CheckpointError(f"checkpoint {str(checkpoint.path)!r}: model.safetensors cannot be read ({error})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {str(checkpoint.path)!r} does not match the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}; resume with the same model configuration"
        )
    if optimizer is not None:
        try:
            optimizer.load_state_dict(torch.load(checkpoint.path / "optimizer.pt", weights_only=True))
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"checkpoint {str(checkpoint.path)!r}: optimizer state does not fit ({error})") from None
