"""Building blocks shared by every model: norms, activations, MLPs, embeddings, positions, attention.

One concept per file; the transformer stacks in :mod:`polyformer.transformer` assemble them.
"""

from polyformer.layers.activations import ACTIVATIONS, GELU, QuickGELU, build_activation
from polyformer.layers.attention import CrossAttention, CrossAttentionCache, MultiHeadAttention
from polyformer.layers.drop_path import DropPath, drop_path, drop_path_rates
from polyformer.layers.embeddings import TokenEmbedding
from polyformer.layers.factorised_attention import FactorisedAttention
from polyformer.layers.mlp import MLP, MLP_KINDS, GatedMLP, build_mlp
from polyformer.layers.norms import NORMS, LayerNorm, RMSNorm, build_norm
from polyformer.layers.position_resize import resize_positions_1d, resize_positions_2d
from polyformer.layers.positions import LearnedPositions, SinusoidalPositions, sinusoidal_table
from polyformer.layers.rotary import RotaryAngles, RotaryEmbedding, RotaryOptions, apply_rotary

__all__ = [
    "ACTIVATIONS",
    "GELU",
    "MLP",
    "MLP_KINDS",
    "NORMS",
    "CrossAttention",
    "CrossAttentionCache",
    "DropPath",
    "FactorisedAttention",
    "GatedMLP",
    "LayerNorm",
    "LearnedPositions",
    "MultiHeadAttention",
    "QuickGELU",
    "RMSNorm",
    "RotaryAngles",
    "RotaryEmbedding",
    "RotaryOptions",
    "SinusoidalPositions",
    "TokenEmbedding",
    "apply_rotary",
    "build_activation",
    "build_mlp",
    "build_norm",
    "drop_path",
    "drop_path_rates",
    "resize_positions_1d",
    "resize_positions_2d",
    "sinusoidal_table",
]
