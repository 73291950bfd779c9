"""A training job as one JSON file, so that every torchrun worker reads the same description.

``polyformer train lm`` writes ``<out_dir>/launch.json`` and either runs it in-process or starts
``torchrun -m polyformer.train <out_dir>/launch.json`` with one process per rank.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyformer.files import atomic_write_text
from polyformer.errors import ConfigError
from polyformer.train.config import TrainConfig
from polyformer.train.models import ModelSpec


@dataclass
class Launch:
    """Everything a worker needs: the data folder, the model spec and the training config."""

    data: str
    model: ModelSpec
    train: TrainConfig
    resume: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "model": self.model.to_dict(), "train": self.train.to_dict(), "resume": self.resume}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Launch":
        for key in ("data", "model", "train"):
            if key not in values:
                raise ConfigError(f"launch file: missing {key!r}")
        return cls(str(values["data"]), ModelSpec.from_dict(values["model"]), TrainConfig.from_dict(values["train"]),
                   bool(values.get("resume", True)))

    def write(self) -> Path:
        path = Path(self.train.out_dir) / "launch.json"
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def read_launch(path: str | Path) -> Launch:
    path = Path(path)
    try:
        return Launch.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as error:
        raise ConfigError(f"launch file {str(path)!r} cannot be read ({error})") from None


def run_launch(launch: Launch):
    """Run the job in this process (one rank of a torchrun job, or alone)."""
    from polyformer.data.prepare import open_dataset
    from polyformer.train import distributed as D
    from polyformer.train.trainer import train

    dataset = open_dataset(launch.data)
    info = D.init_distributed()
    try:
        return train(launch.model, dataset.train.tokens, dataset.val.tokens, dataset.vocab_size, launch.train,
                     dist_info=info, resume=launch.resume, run_info={"data": launch.data})
    finally:
        D.shutdown(info)
