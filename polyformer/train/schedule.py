"""Learning-rate schedule: linear warmup, then cosine decay to ``lr * min_lr_ratio``.

The rate is a pure function of the step, so a resumed run needs only the step to continue the
schedule exactly (there is no scheduler state to save).
"""

from __future__ import annotations

import math

from polyformer.train.config import TrainConfig


def learning_rate(step: int, config: TrainConfig) -> float:
    """The rate of optimiser step ``step`` (0-based): ``lr * (step + 1) / warmup`` during warmup,
    then a half cosine that reaches ``lr * min_lr_ratio`` exactly at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = config.total_steps - 1 - config.warmup_steps
    progress = 1.0 if decay_steps <= 0 else min(1.0, (step - config.warmup_steps) / decay_steps)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1.0 + math.cos(math.pi * progress))
