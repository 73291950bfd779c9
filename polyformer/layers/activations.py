"""Activation functions by name, spelled as Hugging Face configs spell them (``hidden_act``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyformer.errors import ConfigError


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the GELU approximation of OpenAI's CLIP and iGPT."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class GELU(nn.Module):
    """GELU, exact (erf, ``approximate="none"``) or with the tanh approximation of GPT-2 ("gelu_new")."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


def _factories() -> dict[str, type[nn.Module] | tuple[type[nn.Module], dict]]:
    tanh_gelu = (GELU, {"approximate": "tanh"})
    return {
        "gelu": GELU,  # exact, erf-based (BERT, ViT, wav2vec 2.0)
        "gelu_new": tanh_gelu,  # tanh approximation (GPT-2, GPT-Neo, GPT-J)
        "gelu_pytorch_tanh": tanh_gelu,
        "gelu_fast": tanh_gelu,
        "quick_gelu": QuickGELU,  # CLIP
        "relu": nn.ReLU,
        "silu": nn.SiLU,  # SwiGLU gates
        "swish": nn.SiLU,
        "tanh": nn.Tanh,
    }


ACTIVATIONS: tuple[str, ...] = tuple(sorted(_factories()))


def build_activation(name: str) -> nn.Module:
    """The activation module called ``name`` (see :data:`ACTIVATIONS`)."""
    factory = _factories().get(name)
    if factory is None:
        raise ConfigError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")
    if isinstance(factory, tuple):
        cls, kwargs = factory
        return cls(**kwargs)
    return factory()
