"""Build small option dataclasses from keyword arguments, with errors that list what is valid."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from polyformer.errors import ConfigError

T = TypeVar("T")


def make_options(cls: type[T], values: dict[str, Any], where: str) -> T:
    """Instantiate the dataclass ``cls`` from ``values``; unknown keys raise a ConfigError.

    ``where`` names the thing being configured (e.g. ``"attention 'bigbird'"``) in messages.
    Value checks live in each dataclass's ``__post_init__``.
    """
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        valid = ", ".join(sorted(known)) or "(none)"
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}; valid options: {valid}")
    return cls(**values)


def options_to_dict(options: Any) -> dict[str, Any]:
    """The JSON-serialisable fields of an options dataclass (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
