"""A processor made of parts (a tokenizer and an image processor, say), as Hugging Face's
``CLIPProcessor`` or ``LayoutLMv2Processor`` are: one folder, one ``processor_config.json`` that
names the class, and each part's own files beside it.

A family subclasses :class:`CombinedProcessor`, names its Hugging Face class and its parts, and
registers it::

    class CLIPProcessor(CombinedProcessor):
        hf_class = "CLIPProcessor"
        parts = {"tokenizer": "tokenizer", "image_processor": "image_processor"}

    register_processor("processor", CLIPProcessor, names=["CLIPProcessor"], model_types=["clip"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyformer.errors import ConfigError, DataError
from polyformer.processors.base import write_json_files

__all__ = ["CombinedProcessor"]


class CombinedProcessor:
    """Parts by attribute name (``tokenizer``, ``image_processor``); each loads and saves its own files.

    ``__call__(text=..., images=...)`` runs the tokenizer on ``text`` and the image processor on
    ``images`` and returns both outputs in one dict; a family overrides it where its inputs
    interact (e.g. LayoutLM's word boxes).
    """

    #: ``processor_class`` written to ``processor_config.json``
    hf_class = "Processor"
    #: attribute name -> kind of part ("tokenizer" or "image_processor")
    parts: dict[str, str] = {"tokenizer": "tokenizer", "image_processor": "image_processor"}

    def __init__(self, **parts: Any) -> None:
        missing = sorted(set(self.parts) - set(parts))
        extra = sorted(set(parts) - set(self.parts))
        if missing or extra:
            raise ConfigError(f"{type(self).__name__} takes exactly the parts {sorted(self.parts)}; "
                              f"missing {missing}, unexpected {extra}")
        for name, part in parts.items():
            setattr(self, name, part)

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs: Any) -> "CombinedProcessor":
        """Each part from ``folder`` (through the auto classes, so each part's class is the one its file names)."""
        from polyformer.processors.auto import AutoImageProcessor, AutoTokenizer

        loaders = {"tokenizer": AutoTokenizer, "image_processor": AutoImageProcessor}
        return cls(**{name: loaders[kind].from_pretrained(folder) for name, kind in cls.parts.items()}, **kwargs)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Every part's files, then ``processor_config.json`` (written last: a folder that has it is complete)."""
        for name in self.parts:
            getattr(self, name).save_pretrained(folder)
        return write_json_files(folder, {"processor_config.json": {"processor_class": self.hf_class}})

    def __call__(self, text: Any = None, images: Any = None, *, return_tensors: str | None = "pt",
                 **kwargs: Any) -> dict[str, Any]:
        """Tokenizer outputs for ``text`` and image-processor outputs for ``images``, in one dict."""
        if text is None and images is None:
            raise DataError(f"{type(self).__name__} needs text=..., images=... or both")
        out: dict[str, Any] = {}
        if text is not None:
            out.update(self.tokenizer(text, return_tensors=return_tensors, **kwargs))
        if images is not None:
            out.update(self.image_processor(images, return_tensors=return_tensors))
        return out
