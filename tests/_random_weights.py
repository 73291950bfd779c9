"""Random weights of a visible size for parity tests, so a wrongly mapped or missing tensor shows."""

from __future__ import annotations

import torch
from torch import nn


def randomise(model: nn.Module, std: float = 0.2, seed: int | None = None) -> nn.Module:
    """N(0, std) everywhere, norm scales (1-D ``weight``) around 1; returns the model in eval mode."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm_scale = name.endswith("weight") and p.dim() == 1
            p.normal_(1.0 if is_norm_scale else 0.0, std)
    return model.eval()
