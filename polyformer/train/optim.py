"""AdamW with weight decay on matrices only (biases, norm gains and other vectors are not decayed).

A family may also exempt named tables (a ViT's learned position embeddings, as timm and the
original ViT recipe do): pulling a position table towards zero erases where a patch is.
"""

from __future__ import annotations

import torch
from torch import nn

from polyformer.train.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig, no_decay_names: tuple[str, ...] = ()) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters in two groups: decayed (ndim >= 2) and not.

    Parameters named in ``no_decay_names`` are not decayed either. Shared (tied) parameters appear
    once. The learning rate is set each step by the trainer.
    """
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():  # yields a shared (tied) parameter once
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 and name not in no_decay_names else no_decay).append(parameter)
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
