"""ViT (Dosovitskiy et al. 2020): an image cut into patches, embedded like tokens, read by an encoder.

An image (B, C, H, W) is cut into non-overlapping ``patch_size`` × ``patch_size`` patches; each
patch is flattened and projected to ``d_model`` (a strided convolution), a learned class token is
put in front, learned position embeddings are added, and a pre-norm
:class:`~polyformer.transformer.Encoder` reads the sequence. The classifier reads the final class
token. Position tables are interpolated (bicubic, as Hugging Face's ``interpolate_pos_encoding``)
when an image's patch grid differs from the one the model was trained on.

>>> config = ViTConfig(image_size=32, patch_size=8, d_model=32, n_layers=2, n_heads=4, d_ff=64, num_labels=3)
>>> model = ViTForImageClassification(config).eval()
>>> model(torch.randn(2, 3, 32, 32)).logits.shape
torch.Size([2, 3])

Loads and saves Hugging Face ``ViTForImageClassification`` and ``ViTModel`` folders; any registered
attention mechanism can replace the dense one (``config.with_attention("bigbird")``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from polyformer.convert.keymap import KeyMap
from polyformer.errors import ConfigError, ShapeError
from polyformer.layers import resize_positions_2d
from polyformer.models import register_model
from polyformer.models.base import ENCODER_HF_NAMES, EncoderConfig, PretrainedModel, init_weights
from polyformer.models.heads import classification_loss
from polyformer.models.outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from polyformer.models.vit_convert import vit_classifier_key_map, vit_model_key_map
from polyformer.options import require
from polyformer.transformer import Encoder, StackOutput, TransformerConfig

__all__ = ["ViTConfig", "ViTEmbeddings", "ViTForImageClassification", "ViTModel"]

# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
@dataclass
class ViTConfig(EncoderConfig):
    """Sizes and switches of a ViT: :class:`~polyformer.models.base.EncoderConfig`'s plus the input's.

    ``image_size`` (int or (height, width): the size the position table was trained for),
    ``patch_size`` (int or (height, width)), ``num_channels`` (3 for RGB, 1 for grayscale),
    ``qkv_bias``.
    """

    model_types: ClassVar[tuple[str, ...]] = ("vit",)
    hf_names: ClassVar[dict[str, str]] = {**ENCODER_HF_NAMES, "num_channels": "num_channels", "qkv_bias": "qkv_bias"}
    hf_constants: ClassVar[dict[str, Any]] = {"attention_probs_dropout_prob": 0.0}

    image_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 16
    num_channels: int = 3
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        self.check_encoder()
        self.image_size = _pair(self.image_size, "image_size")
        self.patch_size = _pair(self.patch_size, "patch_size")
        self.check_positive("num_channels")
        require(all(i >= p for i, p in zip(self.image_size, self.patch_size)),
                f"ViTConfig.image_size {self.image_size} must be at least patch_size {self.patch_size}")
        self.transformer_config()  # checks activation, mechanism name and options now

    # -- derived ----------------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row at ``image_size``."""
        return self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def transformer_config(self) -> TransformerConfig:
        """The core's config of the encoder (pre-norm, final norm, HF's ``layer_norm_eps``)."""
        return TransformerConfig(
            d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, d_ff=self.d_ff,
            norm_eps=self.norm_eps, activation=self.activation, qkv_bias=self.qkv_bias,
            attention=self.attention, dropout=self.dropout,
        )

    # -- Hugging Face config.json: sizes may be an int or [height, width] ---------------------------
    @classmethod
    def extra_from_hf(cls, raw: dict[str, Any], where: str) -> dict[str, Any]:
        return {"image_size": _hf_size(raw.get("image_size", 224)), "patch_size": _hf_size(raw.get("patch_size", 16))}

    def extra_to_hf(self) -> dict[str, Any]:
        return {"image_size": _to_hf_size(self.image_size), "patch_size": _to_hf_size(self.patch_size),
                "encoder_stride": self.patch_size[0]}


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"ViTConfig.{name} must be an int or (height, width), got {value!r}") from None
    require(len(pair) == 2 and min(pair) > 0, f"ViTConfig.{name} must be positive (height, width), got {value!r}")
    return pair  # type: ignore[return-value]


def _hf_size(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _to_hf_size(pair: tuple[int, int]) -> int | list[int]:
    return pair[0] if pair[0] == pair[1] else list(pair)


# ------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------
class ViTEmbeddings(nn.Module):
    """Patches -> vectors, a class token in front, learned positions added (interpolated when needed)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.grid = config.grid
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(config.num_channels, config.d_model, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.d_model))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.d_model))
        self.dropout = nn.Dropout(config.dropout)

    def positions_for(self, grid: tuple[int, int]) -> Tensor:
        """The (1, 1 + gh·gw, d) table for a ``grid`` of patches: the trained one, or interpolated."""
        if grid == self.grid:
            return self.position_embeddings
        return resize_positions_2d(self.position_embeddings, grid, old_grid=self.grid, num_prefix_tokens=1)

    def forward(self, pixel_values: Tensor, interpolate_pos_encoding: bool = True) -> Tensor:
        """(B, C, H, W) -> (B, 1 + (H/p)·(W/p), d); a border smaller than a patch is dropped."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.num_channels:
            raise ShapeError(
                f"ViT: pixel_values must be (batch, channels={self.num_channels}, height, width), got "
                f"{tuple(pixel_values.shape)}; use polyformer.processors.ImageProcessor to prepare images"
            )
        height, width = pixel_values.shape[-2:]
        if height < self.patch_size[0] or width < self.patch_size[1]:
            raise ShapeError(f"ViT: image {height}x{width} is smaller than one patch {self.patch_size}")
        x = self.projection(pixel_values.to(self.projection.weight.dtype))  # (B, d, gh, gw)
        grid = (x.shape[-2], x.shape[-1])
        if grid != self.grid and not interpolate_pos_encoding:
            raise ShapeError(
                f"ViT: a {height}x{width} image gives a {grid} patch grid but the model was trained on "
                f"{self.grid}; pass interpolate_pos_encoding=True or resize the image"
            )
        x = x.flatten(2).transpose(1, 2)  # (B, gh·gw, d)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, d)
        x = torch.cat((cls, x), dim=1) + self.positions_for(grid)  # (B, 1 + gh·gw, d)
        return self.dropout(x)


class _ViTBackbone(nn.Module):
    """Embeddings and the encoder (whose ``final_norm`` is Hugging Face's ``vit.layernorm``)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.embeddings = ViTEmbeddings(config)
        self.encoder = Encoder(config.transformer_config())

    def forward(self, pixel_values: Tensor, interpolate_pos_encoding: bool = True,
                output_hidden_states: bool = False, output_attentions: bool = False) -> StackOutput:
        h = self.embeddings(pixel_values, interpolate_pos_encoding)  # (B, N, d)
        return self.encoder.run(h, output_hidden_states=output_hidden_states, output_attentions=output_attentions)


def init_vit_weights(model: nn.Module, std: float) -> None:
    """Hugging Face's ViT initialisation: truncated N(0, std) for projections, tokens and positions."""
    init_weights(model, std, truncated=True)
    for module in model.modules():
        if isinstance(module, ViTEmbeddings):
            nn.init.trunc_normal_(module.cls_token, std=std)
            nn.init.trunc_normal_(module.position_embeddings, std=std)


class ViTForImageClassification(PretrainedModel):
    """ViT with a linear classifier on the final class token (Hugging Face ``ViTForImageClassification``).

    Parameter names: ``vit.embeddings.*``, ``vit.encoder.layers.{i}.*`` (the core's names),
    ``vit.encoder.final_norm``, ``classifier``.
    """

    model_type: ClassVar[str] = "vit"
    architectures: ClassVar[tuple[str, ...]] = ("ViTForImageClassification",)
    config_class: ClassVar[type] = ViTConfig
    head_weight: ClassVar[str] = "classifier.weight"

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config)
        self.vit = _ViTBackbone(config)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        init_vit_weights(self, config.initializer_range)

    def forward(
        self, pixel_values: Tensor, labels: Tensor | None = None, interpolate_pos_encoding: bool = True,
        output_hidden_states: bool = False, output_attentions: bool = False,
    ) -> ImageClassifierOutput:
        """Class scores for ``pixel_values`` (B, C, H, W); ``loss`` when ``labels`` are given."""
        out = self.vit(pixel_values, interpolate_pos_encoding, output_hidden_states, output_attentions)
        logits = self.classifier(out.last_hidden_state[:, 0])  # (B, num_labels)
        loss = None if labels is None else classification_loss(logits, labels, self.config.problem_type)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                     attentions=out.attentions)

    @classmethod
    def key_map(cls, config: ViTConfig) -> KeyMap:
        return vit_classifier_key_map()


class ViTModel(PretrainedModel):
    """The ViT encoder without a head (Hugging Face ``ViTModel``), with the optional tanh pooler.

    Loading builds the pooler when the checkpoint has one (``add_pooling_layer=`` overrides).
    """

    model_type: ClassVar[str] = "vit"
    architectures: ClassVar[tuple[str, ...]] = ("ViTModel",)
    config_class: ClassVar[type] = ViTConfig

    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = ViTEmbeddings(config)
        self.encoder = Encoder(config.transformer_config())
        self.pooler = nn.Linear(config.d_model, config.d_model) if add_pooling_layer else None
        init_vit_weights(self, config.initializer_range)

    def forward(self, pixel_values: Tensor, interpolate_pos_encoding: bool = True,
                output_hidden_states: bool = False, output_attentions: bool = False) -> BaseModelOutputWithPooling:
        """Hidden states of every token, and ``tanh(pooler(class token))`` when there is a pooler."""
        out = self.encoder.run(self.embeddings(pixel_values, interpolate_pos_encoding),
                               output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        h = out.last_hidden_state  # (B, N, d)
        pooled = torch.tanh(self.pooler(h[:, 0])) if self.pooler is not None else None  # (B, d)
        return BaseModelOutputWithPooling(last_hidden_state=h, pooler_output=pooled, hidden_states=out.hidden_states,
                                          attentions=out.attentions)

    @classmethod
    def key_map(cls, config: ViTConfig, add_pooling_layer: bool = True) -> KeyMap:
        return vit_model_key_map(add_pooling_layer)

    @classmethod
    def build_options(cls, hf_state: dict[str, Tensor]) -> dict[str, Any]:
        return {"add_pooling_layer": any(k.endswith("pooler.dense.weight") for k in hf_state)}

    def save_options(self) -> dict[str, Any]:
        return {"add_pooling_layer": self.pooler is not None}


# The classifier first: a config.json without "architectures" loads as the classifier.
register_model(ViTForImageClassification)
register_model(ViTModel)
