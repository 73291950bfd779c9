"""Position-wise feed-forward layers: the classic two-layer MLP and the gated (GLU) variant."""

from __future__ import annotations

from torch import Tensor, nn

from polyformer.errors import ConfigError
from polyformer.layers.activations import build_activation


class MLP(nn.Module):
    """``fc_out(act(fc_in(x)))``, hidden width ``d_ff`` (GPT-2, BERT, ViT, CLIP)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", bias: bool = True) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_ff, bias=bias)
        self.act = build_activation(activation)
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.act(self.fc_in(x)))  # (..., d_model)


class GatedMLP(nn.Module):
    """``down_proj(act(gate_proj(x)) * up_proj(x))``: SwiGLU with ``silu``, GEGLU with ``gelu``."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "silu", bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.act = build_activation(activation)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))  # (..., d_model)


MLP_KINDS: tuple[str, ...] = ("mlp", "gated")


def build_mlp(kind: str, d_model: int, d_ff: int, activation: str, bias: bool) -> nn.Module:
    """The feed-forward layer of ``kind`` (see :data:`MLP_KINDS`)."""
    if kind == "mlp":
        return MLP(d_model, d_ff, activation, bias)
    if kind == "gated":
        return GatedMLP(d_model, d_ff, activation, bias)
    raise ConfigError(f"unknown mlp kind {kind!r}; choose one of: {', '.join(MLP_KINDS)}")
