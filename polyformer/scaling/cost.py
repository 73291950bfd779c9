"""Training FLOPs, time and cost of a run on given hardware.

FLOPs per training token: the forward pass of a decoder costs 2 N + 2 n_layer n_ctx d_attn
(Kaplan et al. 2020, Table 1: matrix multiplies plus attention over the context), and the
backward pass twice that, so C = 3 D (2 N + 2 n_layer n_ctx d_attn) ≈ 6 N D when the context
term is small.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from polyformer.options import require

SECONDS_PER_HOUR = 3600.0
HOURS_PER_YEAR = 24.0 * 365.0
_BACKWARD_FACTOR = 3.0  # forward + backward ≈ 3 forward passes


def _positive(name: str, value: float) -> None:
    require(isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
            f"{name} must be a positive number, got {value!r}")


def training_flops(params: float, tokens: float) -> float:
    """C ≈ 6 N D."""
    _positive("params", params)
    _positive("tokens", tokens)
    return 6.0 * params * tokens


def forward_flops_per_token(params: float, n_layer: int, n_ctx: int, d_attn: int) -> float:
    """2 N + 2 n_layer n_ctx d_attn FLOPs for one token's forward pass."""
    _positive("params", params)
    for name, value in (("n_layer", n_layer), ("n_ctx", n_ctx), ("d_attn", d_attn)):
        _positive(name, value)
    return 2.0 * params + 2.0 * n_layer * n_ctx * d_attn


def training_flops_with_attention(params: float, tokens: float, n_layer: int, n_ctx: int, d_attn: int) -> float:
    """C = 3 D (2 N + 2 n_layer n_ctx d_attn): forward and backward passes with the context term."""
    _positive("tokens", tokens)
    return _BACKWARD_FACTOR * tokens * forward_flops_per_token(params, n_layer, n_ctx, d_attn)


@dataclass(frozen=True)
class Hardware:
    """Accelerators used for training: achieved throughput, count and prices."""

    peak_flops: float  # FLOP/s of one device (sustained, if utilisation is 1)
    utilisation: float = 1.0  # fraction of peak actually achieved
    count: int = 1
    price_per_hour: float | None = None  # per device-hour
    power_watts: float | None = None  # per device
    energy_price_per_kwh: float | None = None

    def __post_init__(self) -> None:
        _positive("peak_flops", self.peak_flops)
        require(0 < self.utilisation <= 1, f"utilisation must be in (0, 1], got {self.utilisation}")
        require(isinstance(self.count, int) and self.count >= 1, f"count must be a positive integer, got {self.count}")
        for name in ("price_per_hour", "power_watts", "energy_price_per_kwh"):
            value = getattr(self, name)
            require(value is None or (math.isfinite(value) and value >= 0), f"{name} must be >= 0, got {value}")

    @property
    def achieved_flops(self) -> float:
        """FLOP/s of one device in practice."""
        return self.peak_flops * self.utilisation


@dataclass(frozen=True)
class CostEstimate:
    """Time, money and energy to spend ``flops`` on ``hardware``."""

    flops: float
    device_seconds: float
    device_hours: float
    device_years: float
    wall_clock_days: float
    cost: float | None
    energy_kwh: float | None
    energy_cost: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_cost(flops: float, hardware: Hardware) -> CostEstimate:
    """Device time = C / (peak x utilisation); wall clock divides by the device count."""
    _positive("flops", flops)
    device_seconds = flops / hardware.achieved_flops
    device_hours = device_seconds / SECONDS_PER_HOUR
    energy = None if hardware.power_watts is None else hardware.power_watts * device_hours / 1000.0
    return CostEstimate(
        flops=flops,
        device_seconds=device_seconds,
        device_hours=device_hours,
        device_years=device_hours / HOURS_PER_YEAR,
        wall_clock_days=device_seconds / hardware.count / 86400.0,
        cost=None if hardware.price_per_hour is None else device_hours * hardware.price_per_hour,
        energy_kwh=energy,
        energy_cost=None if energy is None or hardware.energy_price_per_kwh is None else energy * hardware.energy_price_per_kwh,
    )
