"""Scaling laws by name: ``make_law(name, **context)``, ``law_from_dict(d)``, ``list_laws()``."""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any, Mapping

from polyformer.errors import ConfigError
from polyformer.scaling.laws.base import ScalingLaw

_LAWS: dict[str, type[ScalingLaw]] = {}
_BUILTIN_MODULES = (
    "polyformer.scaling.laws.power",
    "polyformer.scaling.laws.kaplan",
    "polyformer.scaling.laws.chinchilla",
)
_loaded = False


def register_law(cls: type[ScalingLaw]) -> type[ScalingLaw]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    existing = _LAWS.get(cls.name)
    if not cls.name or (existing is not None and existing.__qualname__ != cls.__qualname__):
        raise ConfigError(f"law name {cls.name!r} is empty or already taken")
    _LAWS[cls.name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)


def list_laws() -> list[str]:
    """Names of every registered law, sorted."""
    _load_builtins()
    return sorted(_LAWS)


def law_class(name: str) -> type[ScalingLaw]:
    """The class registered under ``name``; an unknown name lists the known ones."""
    _load_builtins()
    try:
        return _LAWS[name]
    except KeyError:
        raise ConfigError(f"unknown scaling law {name!r}; known laws: {', '.join(sorted(_LAWS))}") from None


def _context_fields(cls: type[ScalingLaw]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - set(cls.parameter_names)  # type: ignore[arg-type]


def make_law(name: str, **context: Any) -> ScalingLaw:
    """An unfitted law, e.g. ``make_law("power", variable="C")``; unknown options are rejected."""
    cls = law_class(name)
    allowed = _context_fields(cls)
    unknown = sorted(set(context) - allowed)
    if unknown:
        valid = ", ".join(sorted(allowed)) or "(none)"
        raise ConfigError(f"law {name!r}: unknown option(s) {', '.join(unknown)}; valid options: {valid}")
    return cls(**context)


def law_from_dict(data: Mapping[str, Any]) -> ScalingLaw:
    """Rebuild a law from :meth:`ScalingLaw.to_dict` output (extra keys are ignored)."""
    if "law" not in data:
        raise ConfigError("a saved law needs a 'law' key naming it (e.g. \"chinchilla\")")
    cls = law_class(str(data["law"]))
    missing = [p for p in cls.parameter_names if p not in data]
    if missing:
        raise ConfigError(f"saved {cls.name!r} law lacks parameter(s) {', '.join(missing)}")
    values: dict[str, Any] = {k: data[k] for k in _context_fields(cls) if k in data}
    for p in cls.parameter_names:
        value = data[p]
        if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise ConfigError(f"saved {cls.name!r} law: parameter {p} must be a finite number, got {value!r}")
        values[p] = float(value)
    return cls(**values)
