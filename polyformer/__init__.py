"""polyformer: transformers along three axes — scaling laws, efficient attention, beyond text."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def from_pretrained(path: Any, **kwargs: Any) -> Any:
    """Load any supported Hugging Face model folder (the family is read from ``config.json``)."""
    from polyformer.models import from_pretrained as load

    return load(path, **kwargs)


def pipeline(task: str, model: Any = None, **kwargs: Any) -> Any:
    """A task pipeline (``"text-generation"``, ``"image-classification"``, ...) around a model."""
    from polyformer.pipelines import pipeline as build

    return build(task, model=model, **kwargs)


def __getattr__(name: str) -> Any:
    """``polyformer.AutoTokenizer`` / ``polyformer.AutoProcessor``, imported on first use."""
    if name in ("AutoTokenizer", "AutoProcessor", "AutoImageProcessor"):
        import polyformer.processors.auto as auto

        return getattr(auto, name)
    raise AttributeError(f"module 'polyformer' has no attribute {name!r}")
