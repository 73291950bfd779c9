"""``AutoTokenizer`` / ``AutoImageProcessor`` / ``AutoProcessor``: the processor class a model folder
names, found the way Hugging Face's auto classes find it.

Lookup order for a tokenizer: ``tokenizer_class`` in ``tokenizer_config.json``; else the
``model_type`` of ``config.json``; else the model inside ``tokenizer.json`` (WordPiece or BPE).
For an image processor: ``image_processor_type`` in ``preprocessor_config.json`` (or, in a folder
``transformers`` 5 wrote without that file, in the ``image_processor`` section of
``processor_config.json``), else ``model_type``. :class:`AutoProcessor` returns the combined processor when the folder names one
(``processor_class`` in ``processor_config.json`` or ``preprocessor_config.json``) or its
``model_type`` has one; else the tokenizer when the folder has tokenizer files; else the image
processor.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from polyformer.errors import ConfigError
from polyformer.processors.base import KINDS, missing_files_error, model_type_of, read_json, registered
from polyformer.processors.image import ImageProcessor, read_image_processor_config

__all__ = ["AutoImageProcessor", "AutoProcessor", "AutoTokenizer", "PROCESSOR_MODULES", "processor_class"]

#: modules whose import registers processors (imported on first lookup)
PROCESSOR_MODULES = ["polyformer.processors.text", "polyformer.processors.wordpiece", "polyformer.processors.image",
                     "polyformer.processors.clip", "polyformer.processors.video", "polyformer.processors.tapas_tokenizer"]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")
# the class a tokenizer.json's model section implies when nothing else names one
_TOKENIZER_JSON_MODELS = {"WordPiece": "BertTokenizer", "BPE": "GPT2Tokenizer"}


def _load_modules() -> None:
    for module in PROCESSOR_MODULES:
        importlib.import_module(module)


def processor_class(kind: str, name: str | None, model_type: str | None, where: str) -> type | None:
    """Our class for a Hugging Face class ``name`` (checked first) or ``model_type``; None if neither is given.

    A name we do not support raises :class:`ConfigError` listing the names we do.
    """
    _load_modules()
    by_name, by_type = registered(kind)  # type: ignore[arg-type]
    if name is not None:
        if name in by_name:
            return by_name[name]
        raise ConfigError(
            f"{where}: {KINDS[kind][1]} {name!r} is not supported; supported: {', '.join(sorted(by_name))}"
        )
    if model_type is not None and model_type in by_type:
        return by_type[model_type]
    return None


def _has_tokenizer_files(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _TOKENIZER_FILES)


class AutoTokenizer:
    """``AutoTokenizer.from_pretrained(folder)``: the tokenizer class the folder names, loaded."""

    @staticmethod
    def from_pretrained(folder: str | Path, **kwargs: Any) -> Any:
        """Load the folder's tokenizer; a folder without tokenizer files raises a named :class:`DataError`."""
        folder = Path(folder)
        if not _has_tokenizer_files(folder):
            raise missing_files_error(folder, "a tokenizer (tokenizer.json or tokenizer_config.json with vocab.txt "
                                      "or vocab.json + merges.txt)", "tokenizer.save_pretrained(folder)")
        config_path = folder / "tokenizer_config.json"
        name = read_json(config_path).get("tokenizer_class") if config_path.is_file() else None
        cls = processor_class("tokenizer", name, model_type_of(folder), str(config_path))
        if cls is None and (folder / "tokenizer.json").is_file():
            model = read_json(folder / "tokenizer.json").get("model", {}).get("type")
            cls = processor_class("tokenizer", _TOKENIZER_JSON_MODELS.get(model), None, str(folder / "tokenizer.json"))
        if cls is None:
            by_name, _ = registered("tokenizer")
            raise ConfigError(
                f"{folder}: cannot tell which tokenizer this is (no tokenizer_class in tokenizer_config.json, no "
                f"known model_type in config.json); add \"tokenizer_class\" (one of {', '.join(sorted(by_name))})"
            )
        return cls.from_pretrained(folder, **kwargs)


class AutoImageProcessor:
    """``AutoImageProcessor.from_pretrained(folder)``: the image processor the folder's settings name."""

    @staticmethod
    def from_pretrained(folder: str | Path, **kwargs: Any) -> Any:
        """Load the folder's image processor (settings from ``preprocessor_config.json`` or the
        ``image_processor`` section of ``processor_config.json``); with neither, a named :class:`DataError`.
        ``kwargs`` replace settings."""
        folder = Path(folder)
        raw, path = read_image_processor_config(folder)
        name = raw.get("image_processor_type") or _feature_extractor_name(raw)
        # an untyped file (older polyformer folders): the image module decides by its keys
        cls = processor_class("image_processor", name, model_type_of(folder), str(path)) or ImageProcessor
        return cls.from_pretrained(folder, **kwargs)


def _feature_extractor_name(raw: dict[str, Any]) -> str | None:
    """Older files name ``ViTFeatureExtractor``; it reads as the image processor of the same family."""
    name = raw.get("feature_extractor_type")
    return name.replace("FeatureExtractor", "ImageProcessor") if isinstance(name, str) else None


class AutoProcessor:
    """``AutoProcessor.from_pretrained(folder)``: the combined processor, else the tokenizer, else the image processor."""

    @staticmethod
    def from_pretrained(folder: str | Path, **kwargs: Any) -> Any:
        """Load what preprocesses inputs for the model in ``folder``."""
        folder = Path(folder)
        name, where = None, str(folder / "processor_config.json")
        for file in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
            if (folder / file).is_file() and read_json(folder / file).get("processor_class"):
                name, where = read_json(folder / file)["processor_class"], str(folder / file)
                break
        cls = processor_class("processor", name, model_type_of(folder), where)
        if cls is not None:
            return cls.from_pretrained(folder, **kwargs)
        if _has_tokenizer_files(folder):
            return AutoTokenizer.from_pretrained(folder, **kwargs)
        if (folder / "preprocessor_config.json").is_file():
            return AutoImageProcessor.from_pretrained(folder, **kwargs)
        raise missing_files_error(folder, "a processor (tokenizer files or preprocessor_config.json)",
                                  "processor.save_pretrained(folder) or model.save_pretrained(folder, processor=...)")
