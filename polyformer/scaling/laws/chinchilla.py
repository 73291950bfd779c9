"""Hoffmann et al. (2022): L(N, D) = E + A / N^alpha + B / D^beta."""

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
class ChinchillaLaw(ScalingLaw):
    """Irreducible loss E plus separate power laws in parameters N and training tokens D.

    Fitting vector ``theta = (a, b, e, alpha, beta)`` with ``A = exp(a)``, ``B = exp(b)``,
    ``E = exp(e)`` so that ``log L = logsumexp(a - alpha log N, b - beta log D, e)``
    (Hoffmann et al. 2022, appendix D.2). The default initialisation grid is theirs:
    alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25} (4,500 starts).
    """

    E: float = _NAN
    A: float = _NAN
    B: float = _NAN
    alpha: float = _NAN
    beta: float = _NAN

    name = "chinchilla"
    formula = "L(N, D) = E + A / N^alpha + B / D^beta"
    parameter_names = ("E", "A", "B", "alpha", "beta")
    theta_names = ("a", "b", "e", "alpha", "beta")
    default_grid = {
        "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
        "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
        "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
        "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
        "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    }

    @property
    def variables(self) -> tuple[str, ...]:
        return ("N", "D")

    def theta(self) -> np.ndarray:
        return np.array([math.log(self.A), math.log(self.B), math.log(self.E), self.alpha, self.beta])

    def with_theta(self, theta: Sequence[float]) -> "ChinchillaLaw":
        a, b, e, alpha, beta = (float(t) for t in theta)
        return ChinchillaLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)

    def log_predict_theta(self, theta: torch.Tensor, logx: Mapping[str, torch.Tensor]) -> torch.Tensor:
        a, b, e, alpha, beta = (t[:, None] for t in theta.unbind(-1))
        log_n, log_d = logx["N"][None, :], logx["D"][None, :]
        terms = torch.broadcast_tensors(a - alpha * log_n, b - beta * log_d, e)
        return torch.logsumexp(torch.stack(terms, dim=-1), dim=-1)  # (S, n)

    def lse_features(self, logx: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        log_n, log_d = logx["N"], logx["D"]
        zero, one = torch.zeros_like(log_n), torch.ones_like(log_n)
        #            a     b     e     alpha   beta
        return [
            torch.stack([one, zero, zero, -log_n, zero]),
            torch.stack([zero, one, zero, zero, -log_d]),
            torch.stack([zero, zero, one, zero, zero]),
        ]

    def predict(self, **values: Any) -> np.ndarray:
        n, d = self._inputs(values)
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    # ----- compute-optimal allocation (closed form) --------------------------------------------
    @property
    def allocation_exponents(self) -> tuple[float, float]:
        """(a, b) in N_opt ∝ C^a and D_opt ∝ C^b: a = beta/(alpha+beta), b = alpha/(alpha+beta)."""
        total = self.alpha + self.beta
        return self.beta / total, self.alpha / total

    def compute_optimal(self, flops: Any, flops_per_param_token: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
        """N_opt and D_opt minimising L under C = k N D (k = 6): Hoffmann et al. eq. (4).

        N_opt = G (C/k)^a and D_opt = (C/k) / N_opt with G = (alpha A / (beta B))^(1/(alpha+beta)).
        """
        budget = np.asarray(flops, dtype=np.float64) / flops_per_param_token
        a, _ = self.allocation_exponents
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        n_opt = g * budget**a
        return n_opt, budget / n_opt
