"""CLIP's two encoders on the core, with their configs: a causal text tower pooled at end-of-text,
a ViT-style image tower.

* Text: token + learned position vectors -> the core's causal :class:`~polyformer.transformer.Decoder`
  (pre-norm blocks, final norm) -> the state at each text's end-of-text token.
* Vision: patches (a convolution without bias) + a class token + learned positions -> a norm
  (CLIP's "pre_layrnorm") -> the core's :class:`~polyformer.transformer.Encoder` without a final
  norm -> a norm on the class token (the pooled output).

Both return :class:`~polyformer.models.outputs.BaseModelOutputWithPooling`, so
:class:`~polyformer.compose.two_tower.TwoTower` joins them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from polyformer.attention import AttentionSpec
from polyformer.errors import CheckpointError, DataError, ShapeError
from polyformer.layers import LearnedPositions, TokenEmbedding, resize_positions_1d, resize_positions_2d
from polyformer.layers.norms import build_norm
from polyformer.models.base import FamilyConfig, init_weights
from polyformer.models.outputs import BaseModelOutputWithPooling
from polyformer.options import require
from polyformer.transformer import Block, Decoder, Encoder, TransformerConfig

__all__ = [
    "CLIPTextConfig", "CLIPTextEmbeddings", "CLIPTextTower", "CLIPVisionConfig", "CLIPVisionEmbeddings",
    "CLIPVisionTower", "init_clip_weights",
]

#: Old CLIP configs carry eos_token_id 2, which is not the end-of-text id of the CLIP vocabulary;
#: for them the end of text is where the largest id sits (<|endoftext|> is the last id), as transformers does.
LEGACY_EOS_TOKEN_ID = 2


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
_TOWER_HF_NAMES: dict[str, str] = {
    "d_model": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
    "d_ff": "intermediate_size", "activation": "hidden_act", "norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range", "initializer_factor": "initializer_factor",
    "projection_dim": "projection_dim",
}


@dataclass
class _CLIPTowerConfig(FamilyConfig):
    """What both towers have: the core's uniform names (``d_model``, ``n_layers``, ``n_heads``,
    ``d_ff``, ``activation``, ``norm_eps``, ``dropout``, ``attention``) and ``projection_dim`` (the
    width of the ``…WithProjection`` models' output)."""

    hf_constants: ClassVar[dict[str, Any]] = {"attention_dropout": 0.0}
    own_fields: ClassVar[tuple[str, ...]] = ("attention", "dropout")
    #: whether the tower's stack ends in a norm (the text tower's final_layer_norm; the image tower
    #: norms only its class token, outside the stack)
    final_norm: ClassVar[bool] = False

    d_model: int = 512
    n_layers: int = 12
    n_heads: int = 8
    d_ff: int = 2048
    activation: str = "quick_gelu"
    norm_eps: float = 1e-5
    dropout: float = 0.0
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    projection_dim: int = 512

    def check_tower(self) -> None:
        """Coerce ``attention``; check sizes, activation and mechanism (through the core's config)."""
        self.attention = AttentionSpec.coerce(self.attention)
        self.check_positive("d_model", "n_layers", "n_heads", "d_ff", "projection_dim")
        require(self.d_model % self.n_heads == 0,
                f"{type(self).__name__}.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        self.transformer_config()

    def transformer_config(self) -> TransformerConfig:
        """The core's config: pre-norm layer-norm blocks with biases; a final norm only for the text tower."""
        return TransformerConfig(
            d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, d_ff=self.d_ff,
            norm_eps=self.norm_eps, activation=self.activation, attention=self.attention, dropout=self.dropout,
            final_norm=self.final_norm,
        )


@dataclass
class CLIPTextConfig(_CLIPTowerConfig):
    """The text tower (HF ``clip_text_model``): the shared fields plus ``vocab_size``,
    ``max_position_embeddings`` (77: the context), ``pad_token_id``, ``bos_token_id`` and
    ``eos_token_id`` (where a text is pooled; 2 selects the legacy rule "at the largest id")."""

    model_types: ClassVar[tuple[str, ...]] = ("clip_text_model",)
    final_norm: ClassVar[bool] = True
    hf_names: ClassVar[dict[str, str]] = {
        **_TOWER_HF_NAMES, "vocab_size": "vocab_size", "max_position_embeddings": "max_position_embeddings",
        "pad_token_id": "pad_token_id", "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id",
    }

    vocab_size: int = 49408
    max_position_embeddings: int = 77
    pad_token_id: int | None = 1
    bos_token_id: int | None = 49406
    eos_token_id: int | list[int] = 49407

    def __post_init__(self) -> None:
        self.check_tower()
        self.check_positive("vocab_size", "max_position_embeddings")
        eos = self.eos_token_id if isinstance(self.eos_token_id, (list, tuple)) else [self.eos_token_id]
        require(len(eos) > 0 and all(isinstance(i, int) and 0 <= i < self.vocab_size for i in eos),
                f"CLIPTextConfig.eos_token_id must be a token id (or list of ids) below vocab_size "
                f"{self.vocab_size}, got {self.eos_token_id!r}")

    @classmethod
    def from_hf(cls, raw: dict[str, Any], where: str = "config.json"):
        """Read a ``clip_text_model`` config, or the ``text_config`` of a whole ``clip`` one."""
        return super().from_hf(_tower_dict(raw, "text_config", cls.model_types[0]), where)


@dataclass
class CLIPVisionConfig(_CLIPTowerConfig):
    """The image tower (HF ``clip_vision_model``): the shared fields plus ``image_size`` (the
    square side the position table was trained for), ``patch_size`` and ``num_channels``."""

    model_types: ClassVar[tuple[str, ...]] = ("clip_vision_model",)
    hf_names: ClassVar[dict[str, str]] = {
        **_TOWER_HF_NAMES, "image_size": "image_size", "patch_size": "patch_size", "num_channels": "num_channels",
    }

    d_model: int = 768
    n_heads: int = 12
    d_ff: int = 3072
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3

    def __post_init__(self) -> None:
        self.image_size, self.patch_size = _side(self.image_size, "image_size"), _side(self.patch_size, "patch_size")
        self.check_tower()
        self.check_positive("image_size", "patch_size", "num_channels")
        require(self.image_size >= self.patch_size,
                f"CLIPVisionConfig.image_size ({self.image_size}) must be at least patch_size ({self.patch_size})")

    @classmethod
    def from_hf(cls, raw: dict[str, Any], where: str = "config.json"):
        """Read a ``clip_vision_model`` config, or the ``vision_config`` of a whole ``clip`` one."""
        return super().from_hf(_tower_dict(raw, "vision_config", cls.model_types[0]), where)


def _side(value: Any, name: str) -> Any:
    """CLIP's sizes are square: an int, or a [side, side] pair (which transformers also accepts)."""
    if isinstance(value, (list, tuple)):
        require(len(value) == 2 and value[0] == value[1],
                f"CLIPVisionConfig.{name} must be square (one int), got {list(value)}")
        return value[0]
    return value


def _tower_dict(raw: dict[str, Any], key: str, model_type: str) -> dict[str, Any]:
    """A tower's ``config.json`` dict: itself, or the nested one of a ``clip`` config (whose
    ``*_config_dict`` spelling, written by old transformers, wins as it does there).

    Inside a ``clip`` config the tower's ``projection_dim`` is the model's: that is the width of
    the projections its weights hold. (``transformers`` keeps the tower's own value, 512 unless
    set, and so cannot load a ``…WithProjection`` model from a folder where the two differ.)
    """
    if raw.get("model_type") != "clip":
        return raw
    nested = raw.get(key) or {}
    old = raw.get(f"{key}_dict") or {}
    if not isinstance(nested, dict) or not isinstance(old, dict):
        raise CheckpointError(f"config.json: {key} must be a mapping, got {nested!r}")
    shared = {"projection_dim": raw["projection_dim"]} if raw.get("projection_dim") is not None else {}
    return {**nested, **old, **shared, "model_type": model_type}


# ------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------
class CLIPTextEmbeddings(nn.Module):
    """Token vectors plus learned position vectors (``token_embedding``, ``position_embedding``)."""

    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.token_embedding = TokenEmbedding(config.vocab_size, config.d_model)
        self.position_embedding = LearnedPositions(config.max_position_embeddings, config.d_model)

    def forward(self, input_ids: Tensor, position_ids: Tensor | None = None) -> Tensor:
        """(B, N) ids -> (B, N, d); positions default to 0..N-1."""
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


class CLIPTextTower(nn.Module):
    """CLIP's text encoder (Hugging Face ``CLIPTextTransformer``): causal, pooled at end-of-text."""

    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.decoder = Decoder(config.transformer_config())  # its final_norm is CLIP's final_layer_norm

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                output_attentions: bool = False, output_hidden_states: bool = False) -> BaseModelOutputWithPooling:
        """``input_ids`` (B, N) -> every token's state and, as ``pooler_output``, the end-of-text state."""
        if input_ids.dim() != 2:
            raise ShapeError(f"CLIP text: input_ids must be (batch, length), got {tuple(input_ids.shape)}")
        limit = self.config.max_position_embeddings
        if input_ids.shape[1] > limit and position_ids is None:
            raise ShapeError(
                f"CLIP text: {input_ids.shape[1]} tokens exceed the text tower's {limit} positions "
                f"(max_position_embeddings); tokenize with truncation=True (processor(text=..., truncation=True)), "
                f"or stretch the position table with model.stretch_text_context({input_ids.shape[1]}) "
                "(interpolated positions; accuracy may drop)"
            )
        mask = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(input_ids.shape):
                raise ShapeError(f"CLIP text: attention_mask must be (batch, length) = {tuple(input_ids.shape)}, "
                                 f"got {tuple(attention_mask.shape)}; 1 marks real tokens, 0 padding")
            mask = attention_mask.bool()
        h = self.embeddings(input_ids, position_ids)  # (B, N, d)
        out = self.decoder.run(h, key_padding_mask=mask, output_hidden_states=output_hidden_states,
                               output_attentions=output_attentions)
        last = out.last_hidden_state  # final norm applied
        pooled = last[torch.arange(last.shape[0], device=last.device), self.end_of_text(input_ids)]  # (B, d)
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=pooled,
                                          hidden_states=out.hidden_states, attentions=out.attentions)

    def end_of_text(self, input_ids: Tensor) -> Tensor:
        """(B,) the position each text is pooled at: its first ``eos_token_id`` (legacy: its largest id)."""
        eos = self.config.eos_token_id
        if eos == LEGACY_EOS_TOKEN_ID:
            return input_ids.argmax(dim=-1)
        ids = torch.tensor(eos if isinstance(eos, (list, tuple)) else [eos], device=input_ids.device)
        is_eos = torch.isin(input_ids, ids)
        if not torch.compiler.is_compiling():
            missing = (~is_eos.any(dim=-1)).nonzero().flatten().tolist()
            if missing:
                raise DataError(
                    f"CLIP text: row(s) {missing[:8]} have no end-of-text token (id {eos}), where the text "
                    "is pooled; tokenize with the model's CLIP tokenizer, which appends it (also when truncating)"
                )
        return is_eos.int().argmax(dim=-1)  # the first end-of-text of each row

    @torch.no_grad()
    def stretch_context(self, new_length: int) -> None:
        """Resize the position table to ``new_length`` rows by linear interpolation, and the config."""
        table = self.embeddings.position_embedding.weight
        resized = resize_positions_1d(table, new_length)
        self.embeddings.position_embedding.weight = nn.Parameter(resized, requires_grad=table.requires_grad)
        self.config.max_position_embeddings = new_length


class CLIPVisionEmbeddings(nn.Module):
    """Patches (convolution, no bias) after a class token, plus learned positions (interpolated on request)."""

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.image_size, self.patch_size, self.num_channels = config.image_size, config.patch_size, config.num_channels
        self.grid = config.image_size // config.patch_size
        self.patch_embedding = nn.Conv2d(config.num_channels, config.d_model, config.patch_size,
                                         stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(config.d_model))
        self.position_embedding = LearnedPositions(self.grid * self.grid + 1, config.d_model)

    def forward(self, pixel_values: Tensor, interpolate_pos_encoding: bool = False) -> Tensor:
        """(B, C, H, W) -> (B, 1 + (H/p)·(W/p), d)."""
        size = self.image_size
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.num_channels:
            raise ShapeError(
                f"CLIP vision: pixel_values must be (batch, channels={self.num_channels}, height, width), got "
                f"{tuple(pixel_values.shape)}; prepare images with CLIPImageProcessor (it converts grayscale "
                "and RGBA to RGB)"
            )
        if not pixel_values.is_floating_point():
            raise ShapeError(f"CLIP vision: pixel_values must be normalised floats, got {pixel_values.dtype}; "
                             "prepare images with CLIPImageProcessor")
        height, width = pixel_values.shape[-2:]
        if not interpolate_pos_encoding and (height, width) != (size, size):
            raise ShapeError(
                f"CLIP vision: a {height}x{width} image does not match the model's {size}x{size}; resize it "
                "(CLIPImageProcessor does) or pass interpolate_pos_encoding=True"
            )
        if height < self.patch_size or width < self.patch_size:
            raise ShapeError(f"CLIP vision: image {height}x{width} is smaller than one {self.patch_size}-pixel patch; "
                             f"give images of at least {self.patch_size}x{self.patch_size} pixels (CLIPImageProcessor "
                             "resizes them to the model's size)")
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # (B, d, gh, gw)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # (B, gh·gw, d)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, d)
        table = self.position_embedding.weight
        if grid != (self.grid, self.grid):  # bicubic, as transformers' interpolate_pos_encoding
            table = resize_positions_2d(table, grid, num_prefix_tokens=1)
        return torch.cat((cls, x), dim=1) + table  # (B, 1 + gh·gw, d)


class CLIPVisionTower(nn.Module):
    """CLIP's image encoder (Hugging Face ``CLIPVisionTransformer``): pre-norm in, class token out."""

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_norm = build_norm("layernorm", config.d_model, config.norm_eps)
        self.encoder = Encoder(config.transformer_config())  # no final norm: post_norm acts on the class token
        self.post_norm = build_norm("layernorm", config.d_model, config.norm_eps)

    def forward(self, pixel_values: Tensor, interpolate_pos_encoding: bool = False,
                output_attentions: bool = False, output_hidden_states: bool = False) -> BaseModelOutputWithPooling:
        """Every patch's state (no final norm, as transformers) and the normed class token as ``pooler_output``."""
        h = self.pre_norm(self.embeddings(pixel_values, interpolate_pos_encoding))
        out = self.encoder.run(h, output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        last = out.last_hidden_state
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=self.post_norm(last[:, 0]),
                                          hidden_states=out.hidden_states, attentions=out.attentions)


def init_clip_weights(model: nn.Module, factor: float = 1.0) -> None:
    """CLIP's initialisation (as transformers does it), scaled by ``initializer_factor``.

    In each block, width d and L layers: q, k, v and the MLP's output projection are drawn with std
    d^-1/2·(2L)^-1/2 (smaller for deeper towers, so the residual stream does not grow with depth),
    the attention's output projection with d^-1/2 and the MLP's input with (2d)^-1/2. The class
    token has std d^-1/2, patches and image positions ``initializer_range``, text embeddings 0.02;
    projections into the shared space 1/sqrt(width). Norms start at identity, biases at 0.
    """
    init_weights(model, 0.02 * factor)
    for module in model.modules():
        if isinstance(module, (CLIPTextTower, CLIPVisionTower)):
            d, layers = module.config.d_model, module.config.n_layers
            deep = d ** -0.5 * (2 * layers) ** -0.5 * factor
            for block in module.modules():
                if isinstance(block, Block):
                    for proj in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj, block.mlp.fc_out):
                        nn.init.normal_(proj.weight, std=deep)
                    nn.init.normal_(block.attn.out_proj.weight, std=d ** -0.5 * factor)
                    nn.init.normal_(block.mlp.fc_in.weight, std=(2 * d) ** -0.5 * factor)
        if isinstance(module, CLIPVisionTower):
            embeddings, std = module.embeddings, module.config.initializer_range * factor
            nn.init.normal_(embeddings.class_embedding, std=module.config.d_model ** -0.5 * factor)
            nn.init.normal_(embeddings.patch_embedding.weight, std=std)
            nn.init.normal_(embeddings.position_embedding.weight, std=std)
    for name, module in model.named_modules():
        if name.endswith(("projection", "proj_a", "proj_b")) and isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features ** -0.5 * factor)
