"""The processor protocol: every tokenizer, image / audio / video processor and combined processor
reads and writes the files Hugging Face uses and turns raw inputs into model inputs.

A processor class

* loads itself with ``from_pretrained(folder)`` and writes itself with ``save_pretrained(folder)``
  (atomically, file by file, under Hugging Face's file names);
* turns inputs into a dict of model inputs with ``__call__``;
* is registered under the Hugging Face class names that name it in those files
  (``tokenizer_class`` in ``tokenizer_config.json``, ``image_processor_type`` in
  ``preprocessor_config.json``, ``processor_class`` in ``processor_config.json``) and under the
  ``model_type`` values of ``config.json`` whose folders use it when no class is named.

A new family adds its processor with one line, e.g.
``register_processor("tokenizer", MyTokenizer, names=["CLIPTokenizer"], model_types=["clip"])``;
:mod:`polyformer.processors.auto` then finds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Literal, Protocol, runtime_checkable

from polyformer.errors import ConfigError, DataError
from polyformer.files import atomic_write_text

__all__ = [
    "FILE_NAMES",
    "KINDS",
    "Processor",
    "missing_files_error",
    "model_type_of",
    "read_json",
    "register_processor",
    "registered",
    "write_json_files",
]

Kind = Literal["tokenizer", "image_processor", "processor"]
#: what each kind of processor is called in error messages, and the file that names its class
KINDS: dict[str, tuple[str, str, str]] = {
    # kind: (file naming the class, key naming the class, what a user writes to make the files)
    "tokenizer": ("tokenizer_config.json", "tokenizer_class", "tokenizer.save_pretrained(folder)"),
    "image_processor": ("preprocessor_config.json", "image_processor_type", "image_processor.save_pretrained(folder)"),
    "processor": ("processor_config.json", "processor_class", "processor.save_pretrained(folder)"),
}
#: every file name a processor may read or write (Hugging Face's names)
FILE_NAMES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
              "merges.txt", "preprocessor_config.json", "processor_config.json")


@runtime_checkable
class Processor(Protocol):
    """What every processor offers: load, save, and raw inputs -> a dict of model inputs."""

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs: Any) -> "Processor":
        """The processor stored in ``folder`` (Hugging Face's files)."""
        ...

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the processor's files into ``folder`` (each atomically); returns the folder or file."""
        ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Raw inputs -> model inputs (``input_ids``, ``pixel_values``, ...)."""
        ...


# kind -> Hugging Face class name -> our class; kind -> model_type -> our class
_BY_NAME: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}
_BY_MODEL_TYPE: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}


def register_processor(kind: Kind, cls: type | None = None, *, names: list[str] | tuple[str, ...] = (),
                       model_types: list[str] | tuple[str, ...] = ()) -> Any:
    """Make ``cls`` the processor of ``kind`` for Hugging Face class ``names`` and ``model_types``.

    Usable as a call or, without ``cls``, as a class decorator. A tokenizer class name also
    registers its ``...Fast`` twin: both describe the same files.
    """
    if kind not in KINDS:
        raise ConfigError(f"processor kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def add(target: type) -> type:
        for name in names:
            _BY_NAME[kind][name] = target
            if kind == "tokenizer" and not name.endswith("Fast"):
                _BY_NAME[kind][name + "Fast"] = target
        for model_type in model_types:
            _BY_MODEL_TYPE[kind][model_type] = target
        return target

    return add if cls is None else add(cls)


def registered(kind: Kind) -> tuple[dict[str, type], dict[str, type]]:
    """(class name -> class, model_type -> class) for ``kind``; read-only views for lookups."""
    return dict(_BY_NAME[kind]), dict(_BY_MODEL_TYPE[kind])


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a corrupt file or a non-object raises :class:`DataError` naming it."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON ({error}); write it again with save_pretrained") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; write it again with save_pretrained") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    return raw


def model_type_of(folder: Path) -> str | None:
    """``model_type`` from ``folder/config.json`` (None when there is no config.json)."""
    path = folder / "config.json"
    return read_json(path).get("model_type") if path.is_file() else None


def missing_files_error(folder: Path, wanted: str, how: str) -> DataError:
    """The error for a folder that lacks a processor's files: which files, and how to write them."""
    if not folder.exists():
        return DataError(f"{folder}: no such folder (expected a model folder with {wanted})")
    present = sorted(p.name for p in folder.iterdir() if p.name in FILE_NAMES or p.name == "config.json")
    found = f"it has {', '.join(present)}" if present else "it has no processor files"
    return DataError(f"{folder}: {wanted} is missing ({found}); save the processor beside the model with {how}")


def write_json_files(folder: str | Path, files: dict[str, Any], writers: dict[str, Callable[[Path], None]] | None = None) -> Path:
    """Write each ``name: object`` as indented JSON into ``folder``, each file atomically.

    ``writers`` maps further file names to functions that write them to a given path; they write
    to a temporary name that then replaces the file, so a reader never sees half a file.
    """
    import os
    import tempfile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in files.items():
        atomic_write_text(folder / name, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")
    for name, write in (writers or {}).items():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        os.close(fd)
        try:
            write(Path(tmp))
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, folder / name)
        finally:
            Path(tmp).unlink(missing_ok=True)
    from polyformer.files import fsync_dir

    fsync_dir(folder)
    return folder
