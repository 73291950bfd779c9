"""L-BFGS run on many independent starts at once (one tensor op per step for all starts).

Every start s minimises its own objective ``f_s``; the callable returns all values and
gradients for a batch of rows at once, which is what makes a 4,500-start grid cheap. Starts stop
individually when the largest gradient component falls below ``gtol`` (converged), when no
step along the search direction lowers the objective any more (the limit of floating-point
precision), or when the objective fell by less than ``ftol`` (relative) over the last
``stall_window`` iterations: a start crawling along a flat, degenerate valley (a term of the law
vanishing) would otherwise use all ``max_iter`` iterations. A start stopped that way could have
gained at most ``ftol * max_iter / stall_window`` (4e-5 by default) of its objective before
``max_iter`` anyway; such starts are not marked converged. (scipy's L-BFGS-B default stops after
a single iteration that gains less than 2.2e-9 in absolute terms, ~1e-6 of this objective.)
Each start keeps its own curvature history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

ValueAndGrad = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_ARMIJO = 1e-4
_MAX_HALVINGS = 40


@dataclass
class BatchedResult:
    """Final state of every start."""

    x: torch.Tensor  # (S, P)
    f: torch.Tensor  # (S,)
    grad: torch.Tensor  # (S, P)
    n_iter: torch.Tensor  # (S,) iterations taken
    converged: torch.Tensor  # (S,) bool: max |grad| <= gtol

    @classmethod
    def concatenate(cls, parts: "list[BatchedResult]") -> "BatchedResult":
        """One result from results on consecutive shards of the starts."""
        return cls(*(torch.cat([getattr(p, name) for p in parts]) for name in ("x", "f", "grad", "n_iter", "converged")))

    @property
    def grad_norm(self) -> torch.Tensor:
        """Largest absolute gradient component per start (S,)."""
        return self.grad.abs().amax(-1)


def _direction(g: torch.Tensor, s_hist: torch.Tensor, y_hist: torch.Tensor, rho: torch.Tensor, order: list[int]) -> torch.Tensor:
    """Two-loop recursion: -H g for each row, H the L-BFGS inverse-Hessian estimate."""
    q = g.clone()
    alphas = []
    for j in order:  # newest first
        a = rho[j] * (s_hist[j] * q).sum(-1)
        alphas.append(a)
        q -= a[:, None] * y_hist[j]
    if order:
        newest = order[0]
        sy = (s_hist[newest] * y_hist[newest]).sum(-1)
        yy = (y_hist[newest] ** 2).sum(-1)
        usable = (rho[newest] > 0) & (yy > 0)
        gamma = torch.where(usable, sy / yy.clamp_min(1e-300), torch.ones_like(sy))
        q *= gamma[:, None]
    for j, a in zip(reversed(order), reversed(alphas)):
        b = rho[j] * (y_hist[j] * q).sum(-1)
        q += s_hist[j] * (a - b)[:, None]
    return -q


def minimize_batched(
    fun: ValueAndGrad,
    x0: torch.Tensor,
    groups: torch.Tensor | None = None,
    *,
    gtol: float | torch.Tensor = 1e-7,
    max_iter: int = 1000,
    history: int = 10,
    progress: bool = False,
    desc: str = "L-BFGS",
    ftol: float = 1e-6,
    stall_window: int = 25,
) -> BatchedResult:
    """Minimise each row of ``x0`` (S, P) independently; ``fun(x, groups)`` -> (f (S,), grad (S, P)).

    ``groups`` (S,) is handed back to ``fun`` (for the rows being evaluated) so that starts can
    belong to different objectives, e.g. bootstrap resamples. ``gtol`` may be a scalar or one
    tolerance per start.
    """
    x = x0.detach().to(torch.float64).clone()
    n_starts, n_params = x.shape
    all_rows = torch.arange(n_starts)
    group_of = groups if groups is not None else torch.zeros(n_starts, dtype=torch.long)
    tol = torch.as_tensor(gtol, dtype=torch.float64).expand(n_starts).clone()

    f, g = fun(x, group_of if groups is not None else None)
    finite = torch.isfinite(f) & torch.isfinite(g).all(-1)
    f = torch.where(finite, f, torch.full_like(f, float("inf")))
    active = finite & ~(g.abs().amax(-1) <= tol)
    n_iter = torch.zeros(n_starts, dtype=torch.long)
    f_checkpoint = f.clone()  # objective at the last stall check

    s_hist = torch.zeros(history, n_starts, n_params, dtype=torch.float64)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(history, n_starts, dtype=torch.float64)
    count = 0  # pairs stored so far (all starts step together, so one counter serves all)

    bar = tqdm(total=max_iter, desc=desc, disable=not progress, leave=False)
    for _ in range(max_iter):
        rows = all_rows[active]
        if len(rows) == 0:
            break
        xa, fa, ga = x[rows], f[rows], g[rows]
        order = [(count - 1 - j) % history for j in range(min(count, history))]
        d = _direction(ga, s_hist[:, rows], y_hist[:, rows], rho[:, rows], order)
        slope = (ga * d).sum(-1)
        not_descent = ~(slope < 0)
        if not_descent.any():  # reset to steepest descent where the estimate went wrong
            d[not_descent] = -ga[not_descent]
            slope[not_descent] = -(ga[not_descent] ** 2).sum(-1)
        # First step of a start without curvature history: move by at most 1 in any component.
        step = torch.ones_like(fa)
        if count == 0:
            step = torch.clamp(1.0 / d.abs().amax(-1).clamp_min(1e-300), max=1.0)

        x_new, f_new, g_new = xa.clone(), fa.clone(), ga.clone()
        pending = torch.ones(len(rows), dtype=torch.bool)
        for _ in range(_MAX_HALVINGS):
            idx = pending.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            x_try = xa[idx] + step[idx, None] * d[idx]
            f_try, g_try = fun(x_try, group_of[rows[idx]] if groups is not None else None)
            ok = torch.isfinite(f_try) & torch.isfinite(g_try).all(-1)
            ok &= f_try <= fa[idx] + _ARMIJO * step[idx] * slope[idx]
            accepted = idx[ok]
            x_new[accepted], f_new[accepted], g_new[accepted] = x_try[ok], f_try[ok], g_try[ok]
            pending[accepted] = False
            step[idx[~ok]] *= 0.5
        stalled = pending  # no acceptable step: at the precision limit (or a kink)

        s, y = x_new - xa, g_new - ga
        sy = (s * y).sum(-1)
        curvature_ok = sy > 1e-12 * s.norm(dim=-1) * y.norm(dim=-1)
        slot = count % history
        s_hist[slot, rows], y_hist[slot, rows] = s, y
        rho[slot, rows] = torch.where(curvature_ok, 1.0 / torch.where(curvature_ok, sy, torch.ones_like(sy)), torch.zeros_like(sy))
        count += 1

        x[rows], f[rows], g[rows] = x_new, f_new, g_new
        n_iter[rows] += (~stalled).long()
        done = stalled | (g_new.abs().amax(-1) <= tol[rows])
        active[rows[done]] = False
        if count % stall_window == 0:
            crawling = (f_checkpoint - f) <= ftol * f.abs()
            active &= ~crawling
            f_checkpoint = f.clone()
        bar.update(1)
        bar.set_postfix(active=int(active.sum()))
    bar.close()
    converged = g.abs().amax(-1) <= tol
    return BatchedResult(x=x, f=f, grad=g, n_iter=n_iter, converged=converged & torch.isfinite(f))
