"""The protocol every scaling law follows: parameters, prediction, the fitting form, JSON.

A law is a frozen dataclass whose fields are its *public* parameters (``E``, ``A``, ``alpha`` ...),
plus context fields such as the variable of a single-variable law. An instance whose parameters
are NaN is an unfitted template: the fitter only needs its functional form.

Fitting works on ``theta``, an unconstrained vector in which the prediction is smooth and the
log-sum-exp form is natural (``a = log A``, ``e = log E``): predictions are made as log-loss,
``log L = f(theta, log x)``, and the residuals ``log L_pred - log L_obs`` are what the Huber loss
scores. Laws whose log-loss is a log-sum-exp of terms *affine in theta* say so through
:meth:`ScalingLaw.lse_features`, which lets the fitter use a fast closed-form gradient.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from polyformer.errors import ConfigError, DataError

# Canonical column names of a runs table (see polyformer.scaling.runs) that a law may use.
VARIABLES = ("N", "D", "C", "step")


class ScalingLaw:
    """Base class of the laws; subclasses are frozen dataclasses registered by ``name``."""

    name: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    parameter_names: ClassVar[tuple[str, ...]] = ()
    theta_names: ClassVar[tuple[str, ...]] = ()
    # Initial values tried for each theta component; the fitter starts from their product.
    default_grid: ClassVar[dict[str, tuple[float, ...]]] = {}

    # ----- structure -------------------------------------------------------------------------
    @property
    def variables(self) -> tuple[str, ...]:
        """The runs-table columns this law predicts from, e.g. ``("N", "D")``."""
        raise NotImplementedError

    def context(self) -> dict[str, Any]:
        """Non-parameter fields that define the functional form (e.g. the variable)."""
        return {}

    def parameters(self) -> dict[str, float]:
        """The public parameters by name."""
        return {name: float(getattr(self, name)) for name in self.parameter_names}

    @property
    def is_fitted(self) -> bool:
        """True when every parameter is a finite number."""
        return all(math.isfinite(v) for v in self.parameters().values())

    # ----- theta <-> parameters ----------------------------------------------------------------
    def theta(self) -> np.ndarray:
        """The fitting vector for these parameters (order of ``theta_names``)."""
        raise NotImplementedError

    def with_theta(self, theta: Sequence[float]) -> "ScalingLaw":
        """A copy of this law (same context) with parameters from the fitting vector."""
        raise NotImplementedError

    def with_parameters(self, **values: float) -> "ScalingLaw":
        """A copy with some public parameters replaced."""
        unknown = sorted(set(values) - set(self.parameter_names))
        if unknown:
            raise ConfigError(
                f"law {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"its parameters are {', '.join(self.parameter_names)}"
            )
        return dataclasses.replace(self, **{k: float(v) for k, v in values.items()})  # type: ignore[type-var]

    # ----- predictions ---------------------------------------------------------------------------
    def log_predict_theta(self, theta: torch.Tensor, logx: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Predicted log-loss for a batch of fitting vectors: theta (S, P), logx[v] (n,) -> (S, n)."""
        raise NotImplementedError

    def lse_features(self, logx: Mapping[str, torch.Tensor]) -> list[torch.Tensor] | None:
        """Matrices M_k (P, n) with ``log L = logsumexp_k(theta @ M_k)``, or None if not of that form."""
        return None

    def predict(self, **values: Any) -> np.ndarray:
        """Predicted loss at the given variable values (broadcast numpy arrays)."""
        raise NotImplementedError

    def _inputs(self, values: Mapping[str, Any]) -> list[np.ndarray]:
        """The law's variables from ``values`` as float arrays, checked positive and finite."""
        missing = [v for v in self.variables if values.get(v) is None]
        if missing:
            raise ConfigError(
                f"law {self.name!r} predicts from {', '.join(self.variables)}; missing {', '.join(missing)}"
            )
        if not self.is_fitted:
            raise ConfigError(f"law {self.name!r} has no parameter values yet: fit it or give its parameters")
        out = []
        for v in self.variables:
            x = np.asarray(values[v], dtype=np.float64)
            if not np.all(np.isfinite(x)) or np.any(x <= 0):
                raise DataError(f"{v} must be finite and positive to predict a loss; got {values[v]!r}")
            out.append(x)
        return out

    # ----- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"law": name, **context, **parameters}``: the JSON form read by :func:`law_from_dict`."""
        return {"law": self.name, **self.context(), **self.parameters()}

    def describe(self) -> str:
        """The formula with fitted values, for people."""
        params = ", ".join(f"{k} = {v:.4g}" for k, v in self.parameters().items())
        return f"{self.formula}  ({params})"


def theta_grid(law: ScalingLaw, grid: Mapping[str, Sequence[float]] | None = None) -> torch.Tensor:
    """All combinations of the initial values (S, P), in ``law.theta_names`` order."""
    values = dict(law.default_grid)
    if grid:
        unknown = sorted(set(grid) - set(law.theta_names))
        if unknown:
            raise ConfigError(
                f"grid names {', '.join(unknown)} are not fitting parameters of law {law.name!r}; "
                f"use {', '.join(law.theta_names)}"
            )
        for key, seq in grid.items():
            seq = tuple(float(v) for v in seq)
            if not seq or not all(math.isfinite(v) for v in seq):
                raise ConfigError(f"grid values for {key!r} must be a non-empty list of finite numbers")
            values[key] = seq
    axes = [torch.tensor(values[name], dtype=torch.float64) for name in law.theta_names]
    return torch.cartesian_prod(*axes).reshape(-1, len(axes))


def grid_bounds(law: ScalingLaw, grid: Mapping[str, Sequence[float]] | None = None) -> dict[str, tuple[float, float]]:
    """The smallest and largest initial value of each theta component."""
    starts = theta_grid(law, grid)
    return {name: (float(starts[:, i].min()), float(starts[:, i].max())) for i, name in enumerate(law.theta_names)}
