"""The fitting objective: the Huber loss of log-loss residuals, summed, for a batch of starts.

For parameter vectors theta (S, P) and n runs, the objective of start s is
``sum_i w_i * huber_delta(f(theta_s, x_i) - log L_i)`` where ``f`` is the law's predicted
log-loss. It is summed, not averaged (Besiroglu et al. 2024: averaging rescales the Huber
threshold and silently changes the fit). ``w`` are per-run weights: all ones for a fit, the
resampling counts for a bootstrap refit; several weight sets can be fitted in one batch by
giving each start the index of its set (``groups``).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from polyformer.errors import ConfigError, DataError
from polyformer.scaling.diagnostics import law_inputs
from polyformer.scaling.laws.base import ScalingLaw
from polyformer.scaling.runs import Runs

_BLOCK = 128  # starts evaluated together in the closed-form path


def huber(residual: torch.Tensor, delta: float) -> torch.Tensor:
    """0.5 r^2 where |r| <= delta, delta (|r| - delta/2) elsewhere (same as torch's huber_loss)."""
    clipped = residual.clamp(-delta, delta)  # the derivative of the Huber loss
    return clipped * (residual - 0.5 * clipped)


def log_data(law: ScalingLaw, runs: Runs) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The objective's data: log of the law's variables (n,) and log loss (n,), float64.

    Refuses too few runs: a law with P parameters fitted to P or fewer points is not determined.
    """
    inputs = law_inputs(law, runs)
    n_params = len(law.theta_names)
    if len(runs) <= n_params:
        raise DataError(
            f"the {law.name!r} law has {n_params} parameters but only {len(runs)} runs were given; "
            f"give at least {n_params + 1} (ideally {3 * n_params} or more)"
        )
    logx = {v: torch.from_numpy(np.log(x)) for v, x in inputs.items()}
    return logx, torch.from_numpy(np.log(runs.values("loss")))


class HuberObjective:
    """Value and gradient of the summed Huber objective for a batch of fitting vectors.

    Laws that are a log-sum-exp of affine terms get a closed-form gradient (a few passes over
    an (S, n) array); other laws are differentiated by autograd.
    """

    def __init__(
        self,
        law: ScalingLaw,
        logx: Mapping[str, torch.Tensor],
        log_loss: torch.Tensor,
        delta: float = 1e-3,
        weights: torch.Tensor | None = None,
    ) -> None:
        if not delta > 0:
            raise ConfigError(f"Huber delta must be positive, got {delta}")
        self.law = law
        self.logx = {k: v.to(torch.float64) for k, v in logx.items()}
        self.log_loss = log_loss.to(torch.float64)  # (n,)
        self.delta = float(delta)
        n = self.log_loss.shape[0]
        if weights is not None:
            weights = weights.to(torch.float64)
            if weights.dim() == 1:
                weights = weights[None, :]
            if weights.shape[-1] != n:
                raise ConfigError(f"weights must have {n} columns (one per run), got shape {tuple(weights.shape)}")
        self.weights = weights  # (G, n) or None
        features = law.lse_features(self.logx)
        # Terms constant across runs (like log E) are evaluated once per start, not per run.
        self.features = None if features is None else [
            (m.to(torch.float64), bool((m == m[:, :1]).all())) for m in features
        ]

    @property
    def n_points(self) -> int:
        return int(self.log_loss.shape[0])

    def _weights_for(self, groups: torch.Tensor | None) -> torch.Tensor | None:
        if self.weights is None:
            return None
        if groups is None:
            if self.weights.shape[0] != 1:
                raise ConfigError("weighted objective with several weight sets needs `groups` for each start")
            return self.weights
        return self.weights[groups]  # (S, n)

    def value(self, theta: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Objective per start (S,)."""
        with torch.no_grad():
            if self.features is not None:
                residual = torch.log(self._sum_of_terms(theta)[0]) - self.log_loss
            else:
                residual = self.law.log_predict_theta(theta, self.logx) - self.log_loss
            h = huber(residual, self.delta)
            w = self._weights_for(groups)
            return (h if w is None else h * w).sum(-1)

    def _sum_of_terms(self, theta: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """L_hat = sum_k exp(theta @ M_k) (S, n) and the terms (each (S, n), or (S, 1) if constant)."""
        terms = []
        for m, constant in self.features:  # type: ignore[union-attr]
            terms.append(torch.exp(theta @ m[:, :1]) if constant else torch.exp(theta @ m))
        varying = [t for t in terms if t.shape[-1] != 1] or [terms[0].expand(-1, self.n_points)]
        lhat = varying[0].clone() if len(terms) > 1 else varying[0]
        for t in terms:
            if t is not varying[0]:
                lhat += t
        return lhat, terms

    def value_and_grad(self, theta: torch.Tensor, groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective (S,) and its gradient with respect to theta (S, P)."""
        if self.features is None:
            return self._autograd(theta, groups)
        # Blocks of starts keep the (rows, n) temporaries in cache: several times faster.
        if theta.shape[0] > _BLOCK:
            parts = [
                self._lse_value_and_grad(theta[i : i + _BLOCK], None if groups is None else groups[i : i + _BLOCK])
                for i in range(0, theta.shape[0], _BLOCK)
            ]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return self._lse_value_and_grad(theta, groups)

    def _lse_value_and_grad(self, theta: torch.Tensor, groups: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            # log L = log sum_k exp(theta @ M_k); d log L / d theta = sum_k (exp_k / L) M_k.
            lhat, terms = self._sum_of_terms(theta)
            residual = torch.log(lhat).sub_(self.log_loss)
            clipped = residual.clamp(-self.delta, self.delta)  # dHuber/dr
            # Huber = c (r - c/2) with c the clipped residual; residual is not needed after this.
            shifted = residual.sub_(clipped * 0.5)
            w = self._weights_for(groups)
            if w is not None:
                clipped *= w
            f = torch.linalg.vecdot(clipped, shifted)
            coef = clipped.div_(lhat)  # (S, n): w * dHuber/dlogL / L
            grad = torch.zeros(theta.shape, dtype=theta.dtype)
            for (m, constant), term in zip(self.features, terms):  # type: ignore[arg-type]
                if constant:
                    grad += (term[:, 0] * coef.sum(-1))[:, None] * m[:, 0]
                else:
                    grad += (coef * term) @ m.T
            return f, grad

    def _autograd(self, theta: torch.Tensor, groups: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = theta.detach().clone().requires_grad_(True)
            residual = self.law.log_predict_theta(x, self.logx) - self.log_loss
            h = huber(residual, self.delta)
            w = self._weights_for(groups)
            f = (h if w is None else h * w).sum(-1)
            (grad,) = torch.autograd.grad(f.sum(), x)
        return f.detach(), grad

    def hessian(self, theta: torch.Tensor) -> torch.Tensor:
        """Hessian (P, P) of the objective at one fitting vector (P,), by autograd."""
        if self.weights is not None and self.weights.shape[0] != 1:
            raise ConfigError("the Hessian is available for a single weight set only")
        w = None if self.weights is None else self.weights[0]

        def total(t: torch.Tensor) -> torch.Tensor:
            h = huber(self.law.log_predict_theta(t[None, :], self.logx)[0] - self.log_loss, self.delta)
            return (h if w is None else h * w).sum()

        return torch.autograd.functional.hessian(total, theta.detach().to(torch.float64))

