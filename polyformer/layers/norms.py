"""Normalisation layers by name: ``layernorm`` (mean and variance) and ``rmsnorm`` (scale only)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyformer.errors import ConfigError


class LayerNorm(nn.LayerNorm):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last dimension (``torch.nn.LayerNorm``)."""


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + eps) * weight``: no centring and no bias (iGPT, LLaMA, T5).

    16-bit inputs are normalised in float32 and cast back before the weight is applied, so the
    mean of squares does not overflow or lose precision.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h = x.float() if dtype in (torch.float16, torch.bfloat16) else x
        h = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return h.to(dtype) * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


NORMS: tuple[str, ...] = ("layernorm", "rmsnorm")


def build_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """A normalisation layer of ``kind`` (see :data:`NORMS`) over ``dim`` features."""
    if kind == "layernorm":
        return LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ConfigError(f"unknown norm {kind!r}; choose one of: {', '.join(NORMS)}")
