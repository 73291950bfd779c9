"""AdamW with weight decay on matrices only (biases, norm gains and other vectors are not decayed)."""

from __future__ import annotations

import torch
from torch import nn

from polyformer.train.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters in two groups: decayed (ndim >= 2) and not.

    Shared (tied) parameters appear once. The learning rate is set each step by the trainer.
    """
    decay, no_decay = [], []
    for parameter in model.parameters():  # yields a shared (tied) parameter once
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
    )
