"""Mechanisms by name: ``build(name, **options)``, ``list_mechanisms()``, and a serialisable spec."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from polyformer.attention.base import AttentionMechanism
from polyformer.errors import ConfigError
from polyformer.options import make_options, options_to_dict

_REGISTRY: dict[str, type[AttentionMechanism]] = {}

# Modules whose import registers the built-in mechanisms (imported on first use, not at start-up).
_BUILTIN_MODULES = (
    "polyformer.attention.dense",
    "polyformer.attention.sparse",
    "polyformer.attention.linear",
    "polyformer.attention.lsh",
    "polyformer.attention.performer",
    "polyformer.attention.memory_efficient",
)
_loaded = False


def register(cls: type[AttentionMechanism]) -> type[AttentionMechanism]:
    """Class decorator: make ``cls`` available to :func:`build` under ``cls.name``."""
    if not cls.name:
        raise ConfigError(f"{cls.__name__} must set a non-empty class attribute `name`")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ConfigError(f"attention name {cls.name!r} is already taken by {existing.__name__}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        _loaded = True


def list_mechanisms() -> list[str]:
    """Names of every registered mechanism, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def mechanism_class(name: str) -> type[AttentionMechanism]:
    """The class registered under ``name``; an unknown name lists the known ones."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown attention mechanism {name!r}; known mechanisms: {', '.join(sorted(_REGISTRY))}"
        ) from None


def build(name: str, **options: Any) -> AttentionMechanism:
    """Build mechanism ``name`` with its own options, e.g. ``build("sliding_window", window=512)``."""
    cls = mechanism_class(name)
    return cls(make_options(cls.Options, options, where=f"attention {name!r}"))


@dataclass
class AttentionSpec:
    """A mechanism name plus its options: the serialisable form kept in model configs."""

    name: str = "dense"
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> AttentionMechanism:
        """The mechanism this spec describes."""
        return build(self.name, **self.options)

    @classmethod
    def coerce(cls, value: "AttentionSpec | str | dict[str, Any] | None") -> "AttentionSpec":
        """Accept a spec, a bare name, or a ``{"name": ..., "options": {...}}`` dict."""
        if value is None:
            return cls()
        if isinstance(value, AttentionSpec):
            return value
        if isinstance(value, str):
            return cls(name=value)
        if isinstance(value, dict):
            unknown = set(value) - {"name", "options"}
            if unknown:
                raise ConfigError(
                    f"attention spec has unknown keys {sorted(unknown)}; use "
                    '{"name": "...", "options": {...}}'
                )
            return cls(name=value.get("name", "dense"), options=dict(value.get("options", {})))
        raise ConfigError(f"cannot read an attention spec from {type(value).__name__}: {value!r}")

    @classmethod
    def of(cls, mechanism: AttentionMechanism) -> "AttentionSpec":
        """The spec that rebuilds ``mechanism``."""
        return cls(name=mechanism.name, options=options_to_dict(mechanism.options))
