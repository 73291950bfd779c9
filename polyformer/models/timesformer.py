"""TimeSformer (Bertasius et al. 2021): ViT over the patches of every frame, attending in space and time.

A video (B, T, C, H, W) is cut into patches frame by frame (ViT's strided convolution); a class
token and learned space positions are added per frame, then learned time positions per frame (not
to the class token). Three ways of attending, ``attention_type``:

* ``"divided_space_time"`` — each block attends along time (every patch position over the frames),
  adds that through a ``temporal_dense`` projection, then along space (every frame over its
  patches, the class token repeated per frame and its outputs averaged), then the MLP. Cost
  O(T·S² + S·T²) instead of O((T·S)²).
* ``"joint_space_time"`` — one attention over all 1 + T·S tokens (the core's :class:`Block`).
* ``"space_only"`` — each frame read alone, as ViT would. **Difference from** ``transformers``:
  its ``space_only`` model returns one prediction per *frame* (logits (B·T, labels)); ours averages
  the frames' logits and returns one per *video*, (B, labels). Hidden states stay per frame.

Tokens are laid out as Hugging Face's are: the class token, then for each patch position its
frames (position-major), so ``hidden_states`` compare directly. A frame count or image size other
than the config's interpolates the time / space tables (nearest, as ``transformers`` does).

>>> config = TimesformerConfig(image_size=16, patch_size=8, num_frames=4, d_model=32, n_layers=2,
...                            n_heads=4, d_ff=64, num_labels=3)
>>> TimesformerForVideoClassification(config).eval()(torch.randn(2, 4, 3, 16, 16)).logits.shape
torch.Size([2, 3])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from polyformer.attention import AttentionSpec
from polyformer.convert.keymap import KeyMap
from polyformer.errors import ConfigError, ShapeError
from polyformer.layers import resize_positions_1d, resize_positions_2d
from polyformer.layers.drop_path import DropPath
from polyformer.layers.factorised_attention import FactorisedAttention
from polyformer.layers.mlp import build_mlp
from polyformer.layers.norms import build_norm
from polyformer.models import register_model
from polyformer.models.base import ENCODER_HF_NAMES, PretrainedModel, init_weights
from polyformer.models.heads import classification_loss
from polyformer.models.outputs import BaseModelOutput, ImageClassifierOutput
from polyformer.models.timesformer_convert import timesformer_key_map
from polyformer.models.vit import ViTConfig
from polyformer.options import require
from polyformer.transformer import Block, Encoder, StackOutput, TransformerConfig

__all__ = ["ATTENTION_TYPES", "TimesformerConfig", "TimesformerForVideoClassification", "TimesformerModel"]

ATTENTION_TYPES = ("divided_space_time", "joint_space_time", "space_only")


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
@dataclass
class TimesformerConfig(ViTConfig):
    """ViT's sizes plus ``num_frames`` (the length the time table was trained for),
    ``attention_type`` (one of :data:`ATTENTION_TYPES`), ``drop_path`` (HF ``drop_path_rate``) and
    ``time_attention`` (the mechanism along time in divided blocks; None = ``attention``).
    """

    model_types: ClassVar[tuple[str, ...]] = ("timesformer",)
    hf_names: ClassVar[dict[str, str]] = {
        **ENCODER_HF_NAMES, "num_channels": "num_channels", "qkv_bias": "qkv_bias", "num_frames": "num_frames",
        "attention_type": "attention_type", "drop_path": "drop_path_rate",
    }
    own_fields: ClassVar[tuple[str, ...]] = ("attention", "time_attention")

    norm_eps: float = 1e-6
    num_frames: int = 8
    attention_type: str = "divided_space_time"
    drop_path: float = 0.0
    time_attention: AttentionSpec | None = None

    def __post_init__(self) -> None:
        require(self.attention_type in ATTENTION_TYPES,
                f"TimesformerConfig.attention_type must be one of {', '.join(ATTENTION_TYPES)}, "
                f"got {self.attention_type!r}")
        self.check_positive("num_frames")
        require(self.time_attention is None or self.attention_type == "divided_space_time",
                f"TimesformerConfig.time_attention applies to divided_space_time only (attention_type is "
                f"{self.attention_type!r}); set attention instead")
        if self.time_attention is not None:
            self.time_attention = AttentionSpec.coerce(self.time_attention)
        super().__post_init__()
        self.transformer_config(time=True)  # checks the time mechanism's name and options now

    def transformer_config(self, time: bool = False) -> TransformerConfig:
        """The core's config of the stack (``time``: with the mechanism that runs along time)."""
        attention = (self.time_attention or self.attention) if time else self.attention
        return TransformerConfig(
            d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, d_ff=self.d_ff,
            norm_eps=self.norm_eps, activation=self.activation, qkv_bias=self.qkv_bias,
            attention=attention, dropout=self.dropout, drop_path=self.drop_path,
        )

    def with_attention(self, attention: AttentionSpec | str | dict) -> "TimesformerConfig":
        """A copy whose every attention, along space and along time, is ``attention``."""
        return dataclasses.replace(self, attention=AttentionSpec.coerce(attention), time_attention=None)

    def extra_to_hf(self) -> dict[str, Any]:
        # transformers' TimeSformer reads square sizes as ints only (its blocks divide them).
        return {"image_size": self.image_size[0] if self.image_size[0] == self.image_size[1] else list(self.image_size),
                "patch_size": self.patch_size[0] if self.patch_size[0] == self.patch_size[1] else list(self.patch_size)}


# ------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------
class TimesformerEmbeddings(nn.Module):
    """Frames -> patch vectors with a class token, space positions and (not for space-only) time positions."""

    def __init__(self, config: TimesformerConfig) -> None:
        super().__init__()
        self.grid, self.patch_size, self.num_channels = config.grid, config.patch_size, config.num_channels
        self.space_only = config.attention_type == "space_only"
        self.projection = nn.Conv2d(config.num_channels, config.d_model, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.d_model))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.d_model))
        self.time_embeddings = None
        if not self.space_only:
            self.time_embeddings = nn.Parameter(torch.zeros(1, config.num_frames, config.d_model))
        self.dropout = nn.Dropout(config.dropout)

    def check(self, pixel_values: Tensor) -> None:
        """Named errors for a video tensor that is not (batch, frames, channels, height, width)."""
        shape, c = tuple(pixel_values.shape), self.num_channels
        if pixel_values.dim() != 5:
            hint = " (one video: add a batch axis, pixel_values[None])" if pixel_values.dim() == 4 else ""
            raise ShapeError(f"TimeSformer: pixel_values must be (batch, frames, channels={c}, height, width), got "
                             f"{shape}{hint}; polyformer.processors.video prepares videos")
        if shape[1] == 0:
            raise ShapeError(f"TimeSformer: pixel_values {shape} has no frames; a video needs at least one frame")
        if shape[2] != c:
            swapped = shape[1] == c  # a common mistake: channels before frames
            hint = "; it looks like (batch, channels, frames, ...): use pixel_values.transpose(1, 2)" if swapped else ""
            raise ShapeError(f"TimeSformer: frames must have {c} channels (axis 2 of (batch, frames, channels, "
                             f"height, width)), got {shape}{hint}")
        if shape[3] < self.patch_size[0] or shape[4] < self.patch_size[1]:
            raise ShapeError(f"TimeSformer: frames {shape[3]}x{shape[4]} are smaller than one patch {self.patch_size}")

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, int]:
        """(B, T, C, H, W) -> tokens and T: (B, 1 + S·T, d) position-major, or (B·T, 1 + S, d) space-only."""
        self.check(pixel_values)
        b, t = pixel_values.shape[:2]
        x = self.projection(pixel_values.flatten(0, 1).to(self.projection.weight.dtype))  # (B·T, d, gh, gw)
        grid = (x.shape[-2], x.shape[-1])
        positions = self.position_embeddings
        if grid != self.grid:
            positions = resize_positions_2d(positions, grid, old_grid=self.grid, num_prefix_tokens=1, mode="nearest")
        x = x.flatten(2).transpose(1, 2)  # (B·T, S, d)
        x = self.dropout(torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + positions)
        if self.time_embeddings is None:
            return x, t
        cls, patches = x[:b, :1], x[:, 1:]  # every frame's class token is the same vector
        times = self.time_embeddings
        if t != times.shape[1]:
            times = resize_positions_1d(times, t, mode="nearest")
        patches = patches.reshape(b, t, -1, x.shape[-1]) + times[:, :, None]  # (B, T, S, d)
        patches = self.dropout(patches).transpose(1, 2).flatten(1, 2)  # (B, S·T, d), position-major
        return torch.cat((cls, patches), dim=1), t


class DividedBlock(nn.Module):
    """Time, then space, then MLP; the core's block protocol plus ``num_frames``.

    Names: ``time_norm``, ``time_attn``, ``time_proj`` (HF ``temporal_layernorm``,
    ``temporal_attention``, ``temporal_dense``), then the core's ``attn_norm``, ``attn``,
    ``mlp_norm``, ``mlp``. The same norm feeds the class token and the patches into spatial attention.
    """

    def __init__(self, config: TransformerConfig, layer_index: int, time_config: TransformerConfig) -> None:
        super().__init__()
        c = config

        def attention(cfg: TransformerConfig, axis: str) -> FactorisedAttention:
            return FactorisedAttention(c.d_model, c.n_heads, axis=axis, attention=cfg.attention_for(layer_index),
                                       qkv_bias=c.qkv_bias)

        self.time_norm = build_norm(c.norm, c.d_model, c.norm_eps)
        self.time_attn = attention(time_config, "time")
        self.time_proj = nn.Linear(c.d_model, c.d_model)
        self.attn_norm = build_norm(c.norm, c.d_model, c.norm_eps)
        self.attn = attention(c, "space")
        self.mlp_norm = build_norm(c.norm, c.d_model, c.norm_eps)
        self.mlp = build_mlp(c.mlp, c.d_model, c.ff_dim, c.activation, c.mlp_bias)
        self.drop_path = DropPath(c.drop_path_for(layer_index))

    def forward(self, x: Tensor, *, num_frames: int, output_attentions: bool = False,
                **unsupported: Any) -> Tensor | tuple[Tensor, Tensor, None]:
        """(B, 1 + S·T, d) -> the same; with ``output_attentions`` also the spatial probabilities."""
        given = sorted(k for k, v in unsupported.items() if v is not None and v is not False)
        if given:
            raise ConfigError(f"TimeSformer's divided blocks take no {', '.join(given)}")
        b, n, d = x.shape
        t = num_frames
        s_ = (n - 1) // t
        cls, patches = x[:, :1], x[:, 1:]  # (B, 1, d), (B, S·T, d) position-major
        # Views keep the position-major memory, so the time axis needs no copy: (B, S, T, d) -> (B, T, S, d)
        time_out, _ = self.time_attn(self.time_norm(patches).view(b, s_, t, d).transpose(1, 2))
        # transformers drops the branch before the projection; the projection starts at zero.
        time_out = time_out.transpose(1, 2).reshape(b, s_ * t, d)
        patches = patches + self.time_proj(self.drop_path(time_out))
        frames = self.attn_norm(patches).view(b, s_, t, d).transpose(1, 2)  # (B, T, S, d)
        out = self.attn(frames, self.attn_norm(cls), output_attentions=output_attentions)
        cls = cls + self.drop_path(out[1])
        patches = patches + self.drop_path(out[0].transpose(1, 2).reshape(b, s_ * t, d))
        x = torch.cat((cls, patches), dim=1)
        x = x + self.drop_path(self.mlp(self.mlp_norm(x)))
        return (x, out[2], None) if output_attentions else x


def init_timesformer_weights(model: nn.Module, std: float) -> None:
    """transformers' initialisation (truncated N(0, std); the time table at zero), with each
    ``time_proj`` at zero as the reference implementation starts it: an untrained temporal branch
    adds nothing, so a model initialised from ViT first reads every frame as ViT does."""
    init_weights(model, std, truncated=True)
    for module in model.modules():
        if isinstance(module, TimesformerEmbeddings):
            nn.init.trunc_normal_(module.cls_token, std=std)
            nn.init.trunc_normal_(module.position_embeddings, std=std)
            if module.time_embeddings is not None:
                nn.init.zeros_(module.time_embeddings)
        elif isinstance(module, DividedBlock):
            nn.init.zeros_(module.time_proj.weight)
            nn.init.zeros_(module.time_proj.bias)


class TimesformerModel(PretrainedModel):
    """Embeddings, the stack of blocks and the final norm (Hugging Face ``TimesformerModel``).

    ``last_hidden_state``: (B, 1 + S·T, d) (space-only: (B·T, 1 + S, d), one row per frame).
    """

    model_type: ClassVar[str] = "timesformer"
    architectures: ClassVar[tuple[str, ...]] = ("TimesformerModel",)
    config_class: ClassVar[type] = TimesformerConfig

    def __init__(self, config: TimesformerConfig) -> None:
        super().__init__(config)
        self.embeddings = TimesformerEmbeddings(config)
        time_config = config.transformer_config(time=True)
        divided = config.attention_type == "divided_space_time"
        block_fn = (lambda cfg, i: DividedBlock(cfg, i, time_config)) if divided else Block
        self.encoder = Encoder(config.transformer_config(), block_fn=block_fn)
        init_timesformer_weights(self, config.initializer_range)

    def run(self, pixel_values: Tensor, output_hidden_states: bool = False,
            output_attentions: bool = False) -> tuple[StackOutput, int]:
        """The stack's output and the number of frames."""
        h, t = self.embeddings(pixel_values)
        extra = {"num_frames": t} if self.config.attention_type == "divided_space_time" else None
        out = self.encoder.run(h, output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                               layer_kwargs=extra)
        return out, t

    def forward(self, pixel_values: Tensor, output_attentions: bool = False,
                output_hidden_states: bool = False) -> BaseModelOutput:
        """Hidden states of every token for ``pixel_values`` (B, T, C, H, W)."""
        out, _ = self.run(pixel_values, output_hidden_states, output_attentions)
        return BaseModelOutput(last_hidden_state=out.last_hidden_state, hidden_states=out.hidden_states,
                               attentions=out.attentions)

    @classmethod
    def key_map(cls, config: TimesformerConfig) -> KeyMap:
        return timesformer_key_map(config.attention_type, config.qkv_bias, classifier=False)


class TimesformerForVideoClassification(PretrainedModel):
    """TimeSformer with a linear classifier on the final class token (one prediction per video)."""

    model_type: ClassVar[str] = "timesformer"
    architectures: ClassVar[tuple[str, ...]] = ("TimesformerForVideoClassification",)
    config_class: ClassVar[type] = TimesformerConfig
    head_weight: ClassVar[str] = "classifier.weight"

    def __init__(self, config: TimesformerConfig) -> None:
        super().__init__(config)
        self.timesformer = TimesformerModel(config)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        init_timesformer_weights(self.classifier, config.initializer_range)

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None, output_attentions: bool = False,
                output_hidden_states: bool = False) -> ImageClassifierOutput:
        """Class scores (B, num_labels) for ``pixel_values`` (B, T, C, H, W); ``loss`` with ``labels``."""
        out, t = self.timesformer.run(pixel_values, output_hidden_states, output_attentions)
        logits = self.classifier(out.last_hidden_state[:, 0])  # (B, labels); space-only (B·T, labels)
        if self.config.attention_type == "space_only":
            logits = logits.view(-1, t, logits.shape[-1]).mean(dim=1)  # one prediction per video
        loss = None if labels is None else classification_loss(logits, labels, self.config.problem_type)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                     attentions=out.attentions)

    @classmethod
    def key_map(cls, config: TimesformerConfig) -> KeyMap:
        return timesformer_key_map(config.attention_type, config.qkv_bias)

    @classmethod
    def from_vit(cls, vit_folder: str | Path, *, num_frames: int = 8, num_labels: int | None = None,
                 id2label: dict[int, str] | None = None, attention_type: str = "divided_space_time",
                 **overrides: Any) -> "TimesformerForVideoClassification":
        """A TimeSformer whose spatial part is the ViT in ``vit_folder`` (classifier or bare model).

        Patch embedding, class token, space positions, every block's attention, norms and MLP and
        the final norm come from ViT; each temporal attention and its norm start as copies of the
        block's spatial ones (as the reference implementation starts them), ``time_proj`` and the time table at
        zero, the classifier new. Until trained, each frame is read exactly as ViT reads it.
        """
        from polyformer.models import from_pretrained

        vit = from_pretrained(vit_folder)
        if not isinstance(vit.config, ViTConfig) or isinstance(vit.config, TimesformerConfig):
            raise ConfigError(f"from_vit: {vit_folder} holds a {type(vit).__name__}, not a ViT; "
                              "load a TimeSformer folder with from_pretrained")
        fields = {f.name: getattr(vit.config, f.name) for f in dataclasses.fields(ViTConfig)
                  if f.name not in ("num_labels", "id2label", "problem_type")}
        config = TimesformerConfig(**{**fields, "num_frames": num_frames, "attention_type": attention_type,
                                      "num_labels": num_labels, "id2label": id2label, **overrides})
        model = cls(config)
        backbone = getattr(vit, "vit", vit)  # ViTForImageClassification keeps it under .vit
        ours = model.timesformer
        for name in ("projection", "cls_token", "position_embeddings"):
            _copy(getattr(ours.embeddings, name), getattr(backbone.embeddings, name))
        ours.encoder.final_norm.load_state_dict(backbone.encoder.final_norm.state_dict())
        for block, vit_block in zip(ours.encoder.layers, backbone.encoder.layers):
            for name in ("attn_norm", "attn", "mlp_norm", "mlp"):
                getattr(block, name).load_state_dict(getattr(vit_block, name).state_dict())
            if isinstance(block, DividedBlock):
                block.time_attn.load_state_dict(vit_block.attn.state_dict())
                block.time_norm.load_state_dict(vit_block.attn_norm.state_dict())
        return model


def _copy(target: nn.Module | Tensor, source: nn.Module | Tensor) -> None:
    if isinstance(target, nn.Module):
        target.load_state_dict(source.state_dict())  # type: ignore[union-attr]
    else:
        with torch.no_grad():
            target.copy_(source)  # type: ignore[arg-type]


# The classifier first: a config.json without "architectures" loads as the classifier.
register_model(TimesformerForVideoClassification)
register_model(TimesformerModel)
