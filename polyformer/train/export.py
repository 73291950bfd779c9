"""The end of a run: the trained model as a Hugging Face folder that a pipeline takes directly.

A run folder keeps checkpoints (weights + optimiser state, for resuming); what a user wants at the
end is the *model folder* — ``config.json``, ``model.safetensors`` and the processor that reads
its inputs (tokenizer files, or ``preprocessor_config.json``) — so that
``pipeline("text-generation", model=folder)`` or ``pipeline("image-classification", model=folder)``
works on it as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

MODEL_FOLDER = "model"  # a run folder's exported model: <out_dir>/model


def can_export(model: nn.Module) -> bool:
    """Whether ``model`` writes Hugging Face folders (registered families do; user code may not)."""
    return callable(getattr(model, "save_pretrained", None))


def export_model(model: nn.Module, folder: str | Path, processor: Any = None) -> Path:
    """Write ``model`` (config.json + model.safetensors) and, if given, its ``processor`` into ``folder``."""
    folder = Path(folder)
    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    return folder


def token_folder_tokenizer(data_folder: str | Path) -> Any:
    """The tokenizer of a prepared token folder (its ``tokenizer.json``) as a saveable text tokenizer."""
    from polyformer.processors.text import TextTokenizer

    return TextTokenizer.from_file(Path(data_folder) / "tokenizer.json")
