"""What a fit returns, and its JSON form (read back by ``polyformer scaling predict``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from polyformer.errors import ConfigError, DataError
from polyformer.files import atomic_write_text
from polyformer.scaling.diagnostics import Goodness
from polyformer.scaling.laws import ScalingLaw, law_from_dict
from polyformer.scaling.planning import allocation_exponents


@dataclass
class BootstrapResult:
    """Refits on runs resampled with replacement: parameter samples, errors and intervals."""

    n: int
    seed: int
    level: float
    parameter_names: tuple[str, ...]
    samples: np.ndarray  # (n, n_params) public parameters of each refit
    converged_fraction: float
    seconds: float = 0.0

    def standard_errors(self) -> dict[str, float]:
        """Standard deviation of each parameter over the refits."""
        return {p: float(np.std(self.samples[:, i], ddof=1)) for i, p in enumerate(self.parameter_names)}

    def intervals(self) -> dict[str, tuple[float, float]]:
        """Percentile intervals at ``level`` (e.g. 2.5% and 97.5%)."""
        tail = 50.0 * (1.0 - self.level)
        out = {}
        for i, p in enumerate(self.parameter_names):
            low, high = np.percentile(self.samples[:, i], [tail, 100.0 - tail])
            out[p] = (float(low), float(high))
        return out

    def laws(self, template: ScalingLaw) -> Iterator[ScalingLaw]:
        """The refitted laws (same form as ``template``)."""
        for row in self.samples:
            yield template.with_parameters(**dict(zip(self.parameter_names, (float(v) for v in row))))

    def to_dict(self, with_samples: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n, "seed": self.seed, "level": self.level,
            "converged_fraction": self.converged_fraction, "seconds": self.seconds,
        }
        if with_samples:
            out["samples"] = {p: self.samples[:, i].tolist() for i, p in enumerate(self.parameter_names)}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], parameter_names: tuple[str, ...]) -> "BootstrapResult | None":
        samples = data.get("samples")
        if not samples:
            return None
        try:
            matrix = np.array([samples[p] for p in parameter_names], dtype=np.float64).T
        except (KeyError, ValueError, TypeError) as error:
            raise DataError(f"saved bootstrap samples are malformed ({error})") from None
        return cls(
            n=int(data.get("n", len(matrix))), seed=int(data.get("seed", 0)), level=float(data.get("level", 0.95)),
            parameter_names=parameter_names, samples=matrix,
            converged_fraction=float(data.get("converged_fraction", math.nan)), seconds=float(data.get("seconds", 0.0)),
        )


@dataclass
class HoldoutReport:
    """Errors of a law fitted without the largest runs, on those runs."""

    by: str  # the column that ranks runs by size (C by default)
    threshold: float  # runs with by >= threshold were held out
    rows: list[dict[str, float]]  # per held-out run: variables, observed, predicted, relative error
    mean_abs_rel_error: float
    max_abs_rel_error: float
    rmse_log: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by, "threshold": self.threshold, "n_held_out": len(self.rows),
            "mean_abs_rel_error": self.mean_abs_rel_error, "max_abs_rel_error": self.max_abs_rel_error,
            "rmse_log": self.rmse_log, "runs": self.rows,
        }


@dataclass
class ScalingFit:
    """A fitted law with its optimiser report, goodness of fit, warnings and optional bootstrap."""

    law: ScalingLaw
    objective: float
    delta: float
    grad_norm: float
    gradient_tolerance: float
    converged: bool
    n_starts: int
    n_starts_converged: int
    local_minima: list[tuple[float, list[float]]]  # (objective, theta) of distinct minima: polished ones first, best first
    goodness: Goodness
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bootstrap: BootstrapResult | None = None
    holdout: HoldoutReport | None = None

    def with_bootstrap(self, bootstrap: BootstrapResult, warnings: list[str] | None = None) -> "ScalingFit":
        return replace(self, bootstrap=bootstrap, warnings=self.warnings + list(warnings or []))

    def to_dict(self, with_samples: bool = True) -> dict[str, Any]:
        """JSON form: the law's keys at top level (``law``, parameters), then the report."""
        out: dict[str, Any] = self.law.to_dict()
        out["formula"] = self.law.formula
        exponents = allocation_exponents(self.law)
        if exponents is not None:
            out["allocation"] = {"a": exponents[0], "b": exponents[1], "meaning": "N_opt ∝ C^a, D_opt ∝ C^b"}
        if self.bootstrap is not None:
            out["standard_errors"] = self.bootstrap.standard_errors()
            out["intervals"] = {k: list(v) for k, v in self.bootstrap.intervals().items()}
            out["interval_level"] = self.bootstrap.level
        out["fit"] = {
            "n_points": self.goodness.n_points,
            "huber_delta": self.delta,
            "objective": self.objective,
            "grad_norm": self.grad_norm,
            "gradient_tolerance": self.gradient_tolerance,
            "converged": self.converged,
            "n_starts": self.n_starts,
            "n_starts_converged": self.n_starts_converged,
            "seconds": self.seconds,
            "goodness": self.goodness.to_dict(),
            "local_minima": [{"objective": f, "theta": t} for f, t in self.local_minima],
            "theta_names": list(self.law.theta_names),
        }
        out["warnings"] = list(self.warnings)
        out["notes"] = list(self.notes)
        if self.bootstrap is not None:
            out["bootstrap"] = self.bootstrap.to_dict(with_samples)
        if self.holdout is not None:
            out["holdout"] = self.holdout.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScalingFit":
        """Rebuild a fit saved by :meth:`to_dict` (holdout details are not restored)."""
        law = law_from_dict(data)
        report = data.get("fit", {})
        try:
            goodness = Goodness(**report["goodness"]) if "goodness" in report else Goodness(0, *(math.nan,) * 4)
        except TypeError as error:
            raise DataError(f"saved fit has a malformed 'goodness' entry ({error})") from None
        boot = data.get("bootstrap")
        bootstrap = BootstrapResult.from_dict(boot, law.parameter_names) if isinstance(boot, dict) else None
        return cls(
            law=law,
            objective=float(report.get("objective", math.nan)),
            delta=float(report.get("huber_delta", 1e-3)),
            grad_norm=float(report.get("grad_norm", math.nan)),
            gradient_tolerance=float(report.get("gradient_tolerance", math.nan)),
            converged=bool(report.get("converged", False)),
            n_starts=int(report.get("n_starts", 0)),
            n_starts_converged=int(report.get("n_starts_converged", 0)),
            local_minima=[(float(m["objective"]), list(m["theta"])) for m in report.get("local_minima", [])],
            goodness=goodness,
            warnings=list(data.get("warnings", [])),
            notes=list(data.get("notes", [])),
            seconds=float(report.get("seconds", 0.0)),
            bootstrap=bootstrap,
        )

    def save(self, path: str | Path) -> None:
        """Write the full JSON (with bootstrap samples) atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ScalingFit":
        """Read a fit written by :meth:`save` or by ``polyformer scaling fit --out``/``--json``."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"fit file {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{str(path)!r} is not a JSON fit file ({error})") from None
        if not isinstance(data, dict):
            raise DataError(f"{str(path)!r} must hold a JSON object written by `polyformer scaling fit`")
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise DataError(f"{str(path)!r}: {error}") from None
