"""Model families and ``from_pretrained(path)``, which picks the family from ``config.json``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from polyformer.convert.checkpoint import read_config
from polyformer.errors import CheckpointError
from polyformer.models.base import PretrainedModel

# Hugging Face model_type -> module defining its families (imported on first use).
FAMILY_MODULES: dict[str, str] = {
    "gpt2": "polyformer.models.gpt",
    "gpt_neo": "polyformer.models.gpt",
    "gptj": "polyformer.models.gpt",
    "vit": "polyformer.models.vit",
    "imagegpt": "polyformer.models.igpt",
    "bert": "polyformer.models.bert",
    "clip": "polyformer.models.clip",
    "clip_text_model": "polyformer.models.clip",
    "clip_vision_model": "polyformer.models.clip",
    "timesformer": "polyformer.models.timesformer",
    "tapas": "polyformer.models.tapas",
}

_REGISTRY: dict[str, list[type[PretrainedModel]]] = {}


def register_model(cls: type[PretrainedModel]) -> type[PretrainedModel]:
    """Class decorator: make ``cls`` loadable by :func:`from_pretrained` for its ``model_type``."""
    _REGISTRY.setdefault(cls.model_type, []).append(cls)
    return cls


def supported_model_types() -> list[str]:
    """Every ``model_type`` that :func:`from_pretrained` can load."""
    return sorted(set(FAMILY_MODULES) | set(_REGISTRY))


def model_class(config: dict[str, Any], source: str = "config.json") -> type[PretrainedModel]:
    """The family class for a Hugging Face config dict (by ``model_type``, then ``architectures``)."""
    model_type = config.get("model_type")
    if model_type not in FAMILY_MODULES and model_type not in _REGISTRY:
        raise CheckpointError(
            f"{source}: model_type {model_type!r} is not supported; supported types: "
            f"{', '.join(supported_model_types())}"
        )
    if model_type in FAMILY_MODULES:
        importlib.import_module(FAMILY_MODULES[model_type])
    classes = _REGISTRY[model_type]
    wanted = config.get("architectures") or []
    for cls in classes:
        if any(a in cls.architectures for a in wanted):
            return cls
    if wanted:
        known = sorted(a for c in classes for a in c.architectures)
        raise CheckpointError(
            f"{source}: architecture {wanted[0]} of model_type {model_type!r} is not supported; "
            f"supported: {', '.join(known)}"
        )
    return classes[0]


def from_pretrained(path: str | Path, **kwargs: Any) -> PretrainedModel:
    """Load any supported Hugging Face model folder; the family comes from ``config.json``."""
    config = read_config(path)
    return model_class(config, str(Path(path) / "config.json")).from_pretrained(path, **kwargs)


__all__ = ["FAMILY_MODULES", "PretrainedModel", "from_pretrained", "model_class", "register_model",
           "supported_model_types"]
