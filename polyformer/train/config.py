"""The training configuration: one small dataclass, checked when it is made."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from polyformer.options import make_options, require

# Fields that may differ between a run and its resumption without changing what it computes.
RESUME_FREE_FIELDS = frozenset({"out_dir", "progress", "checkpoint_interval", "keep_checkpoints"})


@dataclass
class TrainConfig:
    """How a model is trained. Batch sizes are per process; the global batch of one optimiser step
    is ``batch_size * grad_accum * world_size`` sequences of ``seq_len`` tokens."""

    total_steps: int = 1000  # optimiser steps
    batch_size: int = 16  # sequences per micro-batch, per process
    grad_accum: int = 1  # micro-batches accumulated into one optimiser step
    seq_len: int = 128  # tokens per sequence
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio at the last step
    warmup_steps: int = 100  # linear warmup from lr / warmup_steps to lr
    weight_decay: float = 0.1  # AdamW decay of matrices (not of biases, norms)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip: float = 1.0  # maximum global gradient norm; 0 disables clipping
    bf16: bool = False  # bfloat16 autocast of the forward pass (CPU)
    eval_interval: int = 100  # evaluate every this many steps (and always at the end); 0: only at the end
    eval_tokens: int = 65536  # validation tokens per evaluation (evenly spaced windows, the same each time)
    checkpoint_interval: int = 0  # checkpoint every this many steps (and always at the end); 0: only at the end
    keep_checkpoints: int = 2  # newest good checkpoints kept; older ones are removed after a new one is safe
    seed: int = 0  # model init, batch sampling and dropout all derive from it
    out_dir: str = "runs/train"  # checkpoints, metrics.jsonl, config.json
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        for name in ("total_steps", "batch_size", "grad_accum", "seq_len", "eval_tokens", "keep_checkpoints"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "eval_interval", "checkpoint_interval", "seed"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 0, f"{name} must be a non-negative integer, got {value!r}")
        require(self.seq_len >= 2, f"seq_len must be at least 2 (one prediction needs two tokens), got {self.seq_len}")
        require(math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr}")
        require(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        require(self.warmup_steps < self.total_steps or self.total_steps == 1,
                f"warmup_steps ({self.warmup_steps}) must be smaller than total_steps ({self.total_steps})")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0, f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        require(self.eps > 0, f"eps must be positive, got {self.eps}")
        require(self.clip >= 0, f"clip must be >= 0 (0 disables clipping), got {self.clip}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        return make_options(cls, dict(values), "training config")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def tokens_per_step(self, world_size: int = 1) -> int:
        """Tokens fed to the model in one optimiser step across all processes."""
        return self.batch_size * self.grad_accum * world_size * self.seq_len


def resume_mismatches(saved: dict[str, Any], current: TrainConfig) -> list[str]:
    """Fields whose values differ between a checkpoint's config and the current one."""
    now = current.to_dict()
    return sorted(
        f"{name} (checkpoint {saved.get(name)!r}, now {now[name]!r})"
        for name in now
        if name not in RESUME_FREE_FIELDS and saved.get(name) != now[name]
    )
