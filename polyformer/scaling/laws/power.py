"""Single-variable power laws: L(X) = E + (X0 / X)^alpha, and L(X) = (X0 / X)^alpha without E."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from polyformer.errors import ConfigError
from polyformer.scaling.laws.base import VARIABLES, ScalingLaw
from polyformer.scaling.laws.registry import register_law

_NAN = float("nan")
_EXPONENTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
_LOG_SCALES = (0.0, 2.5, 5.0, 10.0, 15.0, 20.0, 25.0)


def _check_variable(variable: str) -> None:
    if variable not in VARIABLES:
        raise ConfigError(f"variable must be one of {', '.join(VARIABLES)}; got {variable!r}")


def _x0(c: float, alpha: float) -> float:
    """X0 from c = alpha log X0; infinite when alpha is 0 (the law is then a constant)."""
    if alpha == 0.0:
        return math.inf
    ratio = c / alpha
    return math.exp(ratio) if ratio < 709.0 else math.inf


class _OneVariable:
    """The part both single-variable laws share: which variable (N, D or C) they are a law of."""

    variable: str

    def __post_init__(self) -> None:
        _check_variable(self.variable)

    @property
    def variables(self) -> tuple[str, ...]:
        return (self.variable,)

    def context(self) -> dict[str, Any]:
        return {"variable": self.variable}


@register_law
@dataclass(frozen=True)
class PowerLaw(_OneVariable, ScalingLaw):
    """L(X) = E + (X0/X)^alpha in one variable X (N, D, C or step), as in Kaplan et al. (2020).

    Fitting vector ``theta = (c, alpha, e)`` with ``c = alpha log X0`` and ``E = exp(e)``:
    ``log L = logsumexp(c - alpha log X, e)``.
    """

    variable: str = "C"
    E: float = _NAN
    X0: float = _NAN
    alpha: float = _NAN

    name = "power"
    formula = "L(X) = E + (X0 / X)^alpha"
    parameter_names = ("E", "X0", "alpha")
    theta_names = ("c", "alpha", "e")
    default_grid = {"c": _LOG_SCALES, "alpha": _EXPONENTS, "e": (-1.0, -0.5, 0.0, 0.5, 1.0)}

    def theta(self) -> np.ndarray:
        return np.array([self.alpha * math.log(self.X0), self.alpha, math.log(self.E)])

    def with_theta(self, theta: Sequence[float]) -> "PowerLaw":
        c, alpha, e = (float(t) for t in theta)
        return PowerLaw(variable=self.variable, E=math.exp(e), X0=_x0(c, alpha), alpha=alpha)

    def log_predict_theta(self, theta: torch.Tensor, logx: Mapping[str, torch.Tensor]) -> torch.Tensor:
        c, alpha, e = (t[:, None] for t in theta.unbind(-1))
        log_x = logx[self.variable][None, :]
        terms = torch.broadcast_tensors(c - alpha * log_x, e)
        return torch.logsumexp(torch.stack(terms, dim=-1), dim=-1)  # (S, n)

    def lse_features(self, logx: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        log_x = logx[self.variable]
        zero, one = torch.zeros_like(log_x), torch.ones_like(log_x)
        return [torch.stack([one, -log_x, zero]), torch.stack([zero, zero, one])]

    def predict(self, **values: Any) -> np.ndarray:
        (x,) = self._inputs(values)
        return self.E + (self.X0 / x) ** self.alpha


@register_law
@dataclass(frozen=True)
class PurePowerLaw(_OneVariable, ScalingLaw):
    """L(X) = (X0/X)^alpha: a straight line on log-log axes (no irreducible loss).

    Fitting vector ``theta = (c, alpha)`` with ``c = alpha log X0``: ``log L = c - alpha log X``.
    """

    variable: str = "C"
    X0: float = _NAN
    alpha: float = _NAN

    name = "pure-power"
    formula = "L(X) = (X0 / X)^alpha"
    parameter_names = ("X0", "alpha")
    theta_names = ("c", "alpha")
    default_grid = {"c": _LOG_SCALES, "alpha": _EXPONENTS}

    def theta(self) -> np.ndarray:
        return np.array([self.alpha * math.log(self.X0), self.alpha])

    def with_theta(self, theta: Sequence[float]) -> "PurePowerLaw":
        c, alpha = (float(t) for t in theta)
        return PurePowerLaw(variable=self.variable, X0=_x0(c, alpha), alpha=alpha)

    def log_predict_theta(self, theta: torch.Tensor, logx: Mapping[str, torch.Tensor]) -> torch.Tensor:
        c, alpha = (t[:, None] for t in theta.unbind(-1))
        return c - alpha * logx[self.variable][None, :]  # (S, n)

    def lse_features(self, logx: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        log_x = logx[self.variable]
        return [torch.stack([torch.ones_like(log_x), -log_x])]

    def predict(self, **values: Any) -> np.ndarray:
        (x,) = self._inputs(values)
        return (self.X0 / x) ** self.alpha
