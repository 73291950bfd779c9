"""A training job as one JSON file, so that every torchrun worker reads the same description.

``polyformer train lm`` writes ``<out_dir>/launch.json`` and either runs it in-process or starts
``torchrun -m polyformer.train <out_dir>/launch.json`` with one process per rank. When the model
writes Hugging Face folders (the GPT family does), the run ends with ``<out_dir>/model``: the
trained weights, ``config.json`` and the data's tokenizer files, ready for ``pipeline``.
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
    from polyformer.train.export import MODEL_FOLDER, can_export, export_model, token_folder_tokenizer
    from polyformer.train.trainer import train

    dataset = open_dataset(launch.data)
    info = D.init_distributed()
    try:
        result = train(launch.model, dataset.train.tokens, dataset.val.tokens, dataset.vocab_size, launch.train,
                       dist_info=info, resume=launch.resume, run_info={"data": launch.data})
        if info.is_main and can_export(result.model) and dataset.tokenizer_path.is_file():
            # the run ends with a folder that pipeline("text-generation", model=...) takes as it is
            export_model(result.model, Path(launch.train.out_dir) / MODEL_FOLDER,
                         token_folder_tokenizer(launch.data))
        return result
    finally:
        D.shutdown(info)
