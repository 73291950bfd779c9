"""What every model family shares: Hugging Face folders in, Hugging Face folders out.

A family subclasses :class:`PretrainedModel` and sets:

* ``model_type`` — the Hugging Face ``model_type`` it reads (``"gpt2"``, ``"vit"``, ...);
* ``architectures`` — the Hugging Face class names it stands for (``("GPT2LMHeadModel",)``);
* ``config_class`` — a dataclass with ``from_hf(dict)`` and ``to_hf() -> dict`` (config.json);
* ``key_map(config)`` — the family's literal :class:`~polyformer.convert.KeyMap`.

``from_pretrained`` then reads ``config.json`` + weights, converts, and names every missing,
unexpected or mis-shaped weight; ``save_pretrained`` writes a folder Hugging Face can load.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from polyformer.attention import AttentionSpec
from polyformer.convert.checkpoint import load_state_dict, read_config, save_state_dict
from polyformer.convert.keymap import KeyMap, check_state_dict

#: config.json key under which polyformer keeps its own settings (Hugging Face ignores it)
POLYFORMER_KEY = "polyformer"


class PretrainedModel(nn.Module):
    """Base class of model families that load and save Hugging Face checkpoint folders."""

    model_type: ClassVar[str] = ""
    architectures: ClassVar[tuple[str, ...]] = ()
    config_class: ClassVar[type]
    #: prefix save_pretrained puts before every HF key (e.g. "transformer." for GPT2LMHeadModel)
    hf_save_prefix: ClassVar[str] = ""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def key_map(cls, config: Any) -> KeyMap:
        """The literal key map between this family's Hugging Face names and ours."""
        raise NotImplementedError

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        attention: AttentionSpec | str | dict | None = None,
        dtype: torch.dtype | None = None,
    ):
        """Load a Hugging Face folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).

        ``attention`` swaps the attention mechanism of every layer (e.g. ``"sliding_window"``).
        """
        raw = read_config(path)
        config = cls.config_class.from_hf(raw)
        if attention is not None:
            config = config.with_attention(AttentionSpec.coerce(attention))
        return cls.from_config_and_weights(config, path, dtype=dtype)

    @classmethod
    def from_config_and_weights(cls, config: Any, path: str | Path, *, dtype: torch.dtype | None = None):
        """Build ``cls(config)`` and load the weights in folder ``path`` into it.

        Families whose ``from_pretrained`` takes more options than ``attention`` build their config
        and finish with this; every missing, unexpected or mis-shaped weight is named.
        """
        model = cls(config)
        hf_state, source = load_state_dict(path)
        state, unexpected = cls.key_map(config).to_ours(hf_state)
        state = model.complete_state_dict(state)
        check_state_dict(model, state, unexpected, str(source))
        model.load_state_dict(state, strict=True)
        if dtype is not None:
            model = model.to(dtype)
        return model.eval()

    def complete_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fill weights a checkpoint may legitimately omit (e.g. a tied output projection)."""
        return state

    # -- saving ----------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` in Hugging Face's format, atomically."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        hf_config = self.config.to_hf()
        hf_state = self.key_map(self.config).to_hf(self.state_dict_for_saving(), prefix=self.hf_save_prefix)
        save_state_dict(hf_state, path / "model.safetensors")
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".config.json.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(hf_config, handle, indent=2, sort_keys=True)
        os.replace(tmp, path / "config.json")
        return path

    def state_dict_for_saving(self) -> dict[str, torch.Tensor]:
        """The state dict without weights the HF format does not store (e.g. tied copies)."""
        return self.state_dict()
