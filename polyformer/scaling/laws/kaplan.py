"""Kaplan et al. (2020): the joint law L(N, D) (eq. 1.5) and the learning curve L(N, S) (eq. 1.6)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from polyformer.scaling.laws.base import ScalingLaw
from polyformer.scaling.laws.registry import register_law

_NAN = float("nan")


@register_law
@dataclass(frozen=True)
class KaplanLaw(ScalingLaw):
    """L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (no irreducible term).

    Fitting vector ``theta = (log N_c, log D_c, alpha_N, alpha_D)``:
    ``log L = alpha_D * logsumexp((alpha_N/alpha_D)(log N_c - log N), log D_c - log D)``.
    Not a log-sum-exp of affine terms, so the fitter differentiates it with autograd.
    Kaplan et al. report N_c = 6.4e13, D_c = 1.8e13, alpha_N = 0.076, alpha_D = 0.103.
    """

    N_c: float = _NAN
    D_c: float = _NAN
    alpha_N: float = _NAN
    alpha_D: float = _NAN

    name = "kaplan"
    formula = "L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D"
    parameter_names = ("N_c", "D_c", "alpha_N", "alpha_D")
    theta_names = ("log_N_c", "log_D_c", "alpha_N", "alpha_D")
    default_grid = {
        "log_N_c": (20.0, 25.0, 30.0, 35.0, 40.0),
        "log_D_c": (20.0, 25.0, 30.0, 35.0, 40.0),
        "alpha_N": (0.05, 0.1, 0.2, 0.4),
        "alpha_D": (0.05, 0.1, 0.2, 0.4),
    }

    @property
    def variables(self) -> tuple[str, ...]:
        return ("N", "D")

    def theta(self) -> np.ndarray:
        return np.array([math.log(self.N_c), math.log(self.D_c), self.alpha_N, self.alpha_D])

    def with_theta(self, theta: Sequence[float]) -> "KaplanLaw":
        log_nc, log_dc, alpha_n, alpha_d = (float(t) for t in theta)
        return KaplanLaw(N_c=math.exp(log_nc), D_c=math.exp(log_dc), alpha_N=alpha_n, alpha_D=alpha_d)

    def log_predict_theta(self, theta: torch.Tensor, logx: Mapping[str, torch.Tensor]) -> torch.Tensor:
        log_nc, log_dc, alpha_n, alpha_d = (t[:, None] for t in theta.unbind(-1))
        model_term = (alpha_n / alpha_d) * (log_nc - logx["N"][None, :])
        data_term = log_dc - logx["D"][None, :]
        return alpha_d * torch.logaddexp(model_term, data_term)  # (S, n)

    def predict(self, **values: Any) -> np.ndarray:
        n, d = self._inputs(values)
        return ((self.N_c / n) ** (self.alpha_N / self.alpha_D) + self.D_c / d) ** self.alpha_D

    # ----- compute-optimal allocation (closed form) --------------------------------------------
    @property
    def allocation_exponents(self) -> tuple[float, float]:
        """(a, b) in N_opt ∝ C^a, D_opt ∝ C^b: a = alpha_D/(alpha_N+alpha_D), b = 1 - a."""
        total = self.alpha_N + self.alpha_D
        return self.alpha_D / total, self.alpha_N / total

    def compute_optimal(self, flops: Any, flops_per_param_token: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
        """N_opt, D_opt minimising L(N, D) under C = k N D (k = 6).

        With r = alpha_N/alpha_D, d/dN [(N_c/N)^r + D_c k N / C] = 0 gives
        N_opt = (r N_c^r C / (k D_c))^(1/(1+r)).
        """
        budget = np.asarray(flops, dtype=np.float64) / flops_per_param_token
        r = self.alpha_N / self.alpha_D
        n_opt = (r * self.N_c**r * budget / self.D_c) ** (1.0 / (1.0 + r))
        return n_opt, budget / n_opt


@register_law
@dataclass(frozen=True)
class KaplanCurveLaw(ScalingLaw):
    """L(N, S) = (N_c/N)^alpha_N + (S_c/S)^alpha_S: loss after S optimisation steps.

    Kaplan et al. write S_min (steps at large batch); with a fixed batch the step count is used.
    Fitting vector ``theta = (a, s, alpha_N, alpha_S)`` with ``a = alpha_N log N_c`` and
    ``s = alpha_S log S_c``: ``log L = logsumexp(a - alpha_N log N, s - alpha_S log S)``.
    Kaplan et al. report N_c = 6.5e13, S_c = 2.1e3, alpha_N = 0.076, alpha_S = 0.76.
    """

    N_c: float = _NAN
    S_c: float = _NAN
    alpha_N: float = _NAN
    alpha_S: float = _NAN

    name = "kaplan-curve"
    formula = "L(N, S) = (N_c / N)^alpha_N + (S_c / S)^alpha_S"
    parameter_names = ("N_c", "S_c", "alpha_N", "alpha_S")
    theta_names = ("a", "s", "alpha_N", "alpha_S")
    default_grid = {
        "a": (0.0, 2.5, 5.0, 10.0),
        "s": (0.0, 2.5, 5.0, 10.0),
        "alpha_N": (0.05, 0.1, 0.25, 0.5, 1.0),
        "alpha_S": (0.1, 0.25, 0.5, 1.0, 2.0),
    }

    @property
    def variables(self) -> tuple[str, ...]:
        return ("N", "step")

    def theta(self) -> np.ndarray:
        return np.array(
            [self.alpha_N * math.log(self.N_c), self.alpha_S * math.log(self.S_c), self.alpha_N, self.alpha_S]
        )

    def with_theta(self, theta: Sequence[float]) -> "KaplanCurveLaw":
        a, s, alpha_n, alpha_s = (float(t) for t in theta)
        n_c = math.exp(a / alpha_n) if alpha_n and a / alpha_n < 700 else math.inf
        s_c = math.exp(s / alpha_s) if alpha_s and s / alpha_s < 700 else math.inf
        return KaplanCurveLaw(N_c=n_c, S_c=s_c, alpha_N=alpha_n, alpha_S=alpha_s)

    def log_predict_theta(self, theta: torch.Tensor, logx: Mapping[str, torch.Tensor]) -> torch.Tensor:
        a, s, alpha_n, alpha_s = (t[:, None] for t in theta.unbind(-1))
        return torch.logaddexp(a - alpha_n * logx["N"][None, :], s - alpha_s * logx["step"][None, :])

    def lse_features(self, logx: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        log_n, log_s = logx["N"], logx["step"]
        zero, one = torch.zeros_like(log_n), torch.ones_like(log_n)
        return [torch.stack([one, zero, -log_n, zero]), torch.stack([zero, one, zero, -log_s])]

    def predict(self, **values: Any) -> np.ndarray:
        n, s = self._inputs(values)
        return (self.N_c / n) ** self.alpha_N + (self.S_c / s) ** self.alpha_S

