"""Feature maps φ for linearized attention, sim(q, k) = φ(q)ᵀφ(k), by name or as a callable.

A feature map takes ``(..., D)`` and returns ``(..., F)``. Linearized attention divides by
``Σ_j φ(q)ᵀφ(k_j)``, so the map must never return negative values: a sum of mixed-sign terms can
vanish or change sign and the "attention weights" stop being weights. :func:`resolve_feature_map`
probes every map it is given and rejects one that returns negatives.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from polyformer.errors import ConfigError

FeatureMap = Callable[[Tensor], Tensor]


def elu_plus_one(x: Tensor) -> Tensor:
    """elu(x) + 1: positive everywhere, the default of Katharopoulos et al. (2020)."""
    return F.elu(x).add_(1.0)  # in place: elu's backward reads its input, not this output


def relu(x: Tensor) -> Tensor:
    """max(x, 0): non-negative; a query whose features are all zero gets a zero output."""
    return F.relu(x)


_FEATURE_MAPS: dict[str, FeatureMap] = {"elu+1": elu_plus_one, "relu": relu}


def register_feature_map(name: str, fn: FeatureMap) -> None:
    """Make ``fn`` available as ``feature_map=name``; it is probed for negative values first."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"feature map name must be a non-empty string, got {name!r}")
    _check_probe(fn, where=f"feature map {name!r}")
    _FEATURE_MAPS[name] = fn


def feature_map_names() -> list[str]:
    """The names accepted by ``feature_map=...``."""
    return sorted(_FEATURE_MAPS)


def resolve_feature_map(value: str | FeatureMap, where: str) -> FeatureMap:
    """The callable behind ``value`` (a registered name or a callable), checked for positivity."""
    if isinstance(value, str):
        try:
            return _FEATURE_MAPS[value]
        except KeyError:
            raise ConfigError(
                f"{where}: unknown feature_map {value!r}; known: {', '.join(feature_map_names())} "
                "(or pass a callable mapping (..., D) to non-negative (..., F))"
            ) from None
    if not callable(value):
        raise ConfigError(f"{where}: feature_map must be a name or a callable, got {type(value).__name__}")
    _check_probe(value, where=f"{where}: feature_map {getattr(value, '__name__', value)!r}")
    return value


def is_builtin(fn: FeatureMap) -> bool:
    """Whether ``fn`` is one of the maps shipped here (known to be non-negative everywhere)."""
    return fn in (elu_plus_one, relu)


def check_non_negative(features: Tensor, label: str) -> None:
    """Raise if a (custom) feature map produced negative values; ``label`` names the map."""
    if bool((features < 0).any()):
        raise ConfigError(
            f"{label} returned negative values; linearized attention divides by "
            "Σ φ(q)ᵀφ(k), which needs φ ≥ 0 — use 'elu+1' or wrap the map, e.g. elu(f(x)) + 1"
        )


def _check_probe(fn: FeatureMap, where: str) -> None:
    """Call ``fn`` on width-4 inputs from -30 to 30 (and random ones) and reject negative outputs;
    a map that cannot take width 4 is left to the per-call check."""
    generator = torch.Generator().manual_seed(0)
    sweep = torch.linspace(-30.0, 30.0, 241).view(1, 1, -1, 1).expand(1, 1, 241, 4)
    noise = torch.randn(1, 1, 64, 4, generator=generator) * 3.0
    for probe in (sweep.contiguous(), noise):
        try:
            out = fn(probe)
        except Exception:  # noqa: BLE001
            # A map built for the real head width (e.g. ``x @ W`` with W of shape (64, F)) cannot
            # take a width-4 probe; its outputs are checked for negatives at every call instead.
            return
        if not isinstance(out, Tensor) or out.shape[:-1] != probe.shape[:-1]:
            raise ConfigError(
                f"{where} must map (..., D) to (..., F) keeping the leading dimensions; "
                f"got {getattr(out, 'shape', type(out).__name__)} for input {tuple(probe.shape)}"
            )
        check_non_negative(out, where)
