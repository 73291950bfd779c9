"""Writing a Hugging Face model folder for families whose config names several architectures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from polyformer.convert.checkpoint import save_state_dict
from polyformer.files import atomic_write_text


def write_hf_folder(path: str | Path, hf_config: dict[str, Any], hf_state: dict[str, Tensor]) -> Path:
    """``config.json`` + ``model.safetensors`` in ``path``, each written atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_state_dict(hf_state, path / "model.safetensors")
    atomic_write_text(path / "config.json", json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return path
