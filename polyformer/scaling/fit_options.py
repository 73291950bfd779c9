"""How a scaling law is fitted: the options a fit and its bootstrap refits share.

Both :mod:`polyformer.scaling.fit` (the full-data fit) and :mod:`polyformer.scaling.bootstrap`
(refits on resampled runs) read these settings; keeping them here lets the fit call the
bootstrap without the bootstrap depending on the fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from polyformer.options import require
from polyformer.scaling.parallel import default_workers

COMPETING = 1.25  # a local minimum competes with the best if its objective is within this factor


@dataclass
class FitOptions:
    """How a law is fitted. Defaults follow Hoffmann et al. / Besiroglu et al."""

    delta: float = 1e-3  # Huber threshold on log-loss residuals
    grid: Mapping[str, Sequence[float]] | None = None  # initial values per theta name (None: law's default)
    gtol: float = 1e-6  # batched phase: stop when max|grad| <= gtol * delta * n
    polish_gtol: float = 1e-9  # final polish tolerance, same scale
    polish: int = 5  # distinct best local minima kept; those within COMPETING of the best are polished
    max_iter: int = 1000  # batched L-BFGS iterations per start
    history: int = 10  # L-BFGS memory
    progress: bool = False  # show a progress bar
    workers: int | None = None  # CPU threads (None: torch.get_num_threads()); see polyformer.scaling.parallel

    def __post_init__(self) -> None:
        require(self.delta > 0 and math.isfinite(self.delta), f"delta must be a positive number, got {self.delta}")
        require(self.gtol > 0 and self.polish_gtol > 0, "gtol and polish_gtol must be positive")
        require(self.polish >= 1, f"polish must be at least 1, got {self.polish}")
        require(self.max_iter >= 1 and self.history >= 1, "max_iter and history must be at least 1")
        require(self.workers is None or self.workers >= 1, f"workers must be at least 1, got {self.workers}")

    @property
    def n_workers(self) -> int:
        """Threads the fit uses: ``workers``, or torch's thread count (at most 8) when unset."""
        return self.workers if self.workers is not None else default_workers()
