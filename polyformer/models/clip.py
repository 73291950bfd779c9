"""CLIP (Radford et al. 2021): a text tower and an image tower trained so that matching pairs align.

Each tower reduces its input to one vector (the text at its end-of-text token, the image at its
class token; the towers and their configs are in :mod:`polyformer.models.clip_towers`); a linear
projection without bias puts both into one space, and the similarity of an image and a text is
``exp(logit_scale)`` times the cosine of their projections. The towers are joined by the core's
:class:`~polyformer.compose.two_tower.TwoTower` (tower a = vision, tower b = text).

>>> text = CLIPTextConfig(vocab_size=50, d_model=32, n_layers=1, n_heads=4, d_ff=64, max_position_embeddings=8,
...                       eos_token_id=49)
>>> vision = CLIPVisionConfig(d_model=48, n_layers=1, n_heads=4, d_ff=64, image_size=16, patch_size=8)
>>> model = CLIPModel(CLIPConfig(text, vision, projection_dim=24)).eval()
>>> out = model(input_ids=torch.tensor([[3, 4, 49], [5, 49, 49]]), pixel_values=torch.randn(3, 3, 16, 16))
>>> out.logits_per_image.shape, out.text_embeds.shape
(torch.Size([3, 2]), torch.Size([2, 24]))

Loads and saves Hugging Face ``CLIPModel``, ``CLIPTextModel``, ``CLIPVisionModel`` and the
``…WithProjection`` folders; a one-tower class also loads its tower (and projection) from a whole
``CLIPModel`` folder, as in ``transformers``. Differences from ``transformers``, on purpose:

* the temperature is clamped at 100 in the forward (``TwoTower.max_logit_scale``), as CLIP's
  training clips it; released checkpoints sit at ln(100) or below, so their outputs are unchanged;
* a text longer than ``max_position_embeddings`` or without an end-of-text token raises an error
  naming the fix, where ``transformers`` fails obscurely or pools the first token.
* a tower read from a whole ``CLIPModel`` config takes the model's ``projection_dim`` (the width of
  its projection weights), where ``transformers`` keeps the tower's own and refuses the weights
  when the two differ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch  # noqa: F401  (the example above uses it)
from torch import Tensor, nn

from polyformer.attention import AttentionSpec
from polyformer.compose.two_tower import TwoTower
from polyformer.convert.keymap import KeyMap
from polyformer.errors import ConfigError, ShapeError
from polyformer.models import register_model
from polyformer.models.base import FamilyConfig, PretrainedModel
from polyformer.models.clip_convert import (
    clip_model_key_map, one_tower_of_clip_model, text_model_key_map, text_projection_key_map, vision_model_key_map,
    vision_projection_key_map,
)
from polyformer.models.clip_towers import (
    CLIPTextConfig, CLIPTextTower, CLIPVisionConfig, CLIPVisionTower, init_clip_weights,
)
from polyformer.models.outputs import BaseModelOutputWithPooling, CLIPOutput, CLIPTextModelOutput, CLIPVisionModelOutput
from polyformer.options import require

__all__ = [
    "CLIPConfig", "CLIPModel", "CLIPTextConfig", "CLIPTextModel", "CLIPTextModelWithProjection", "CLIPVisionConfig",
    "CLIPVisionModel", "CLIPVisionModelWithProjection",
]


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
@dataclass
class CLIPConfig(FamilyConfig):
    """A whole CLIP (HF ``clip``): ``text_config``, ``vision_config`` (configs, or dicts of their
    fields), ``projection_dim`` (the shared space), ``logit_scale_init_value`` (ln(1/0.07), the
    temperature at start) and ``initializer_factor``."""

    model_types: ClassVar[tuple[str, ...]] = ("clip",)
    hf_names: ClassVar[dict[str, str]] = {
        "projection_dim": "projection_dim", "logit_scale_init_value": "logit_scale_init_value",
        "initializer_factor": "initializer_factor",
    }
    own_fields: ClassVar[tuple[str, ...]] = ()  # each tower keeps its own settings

    text_config: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    vision_config: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    initializer_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.text_config is None or isinstance(self.text_config, dict):
            self.text_config = CLIPTextConfig(**(self.text_config or {}))
        if self.vision_config is None or isinstance(self.vision_config, dict):
            self.vision_config = CLIPVisionConfig(**(self.vision_config or {}))
        require(isinstance(self.text_config, CLIPTextConfig) and isinstance(self.vision_config, CLIPVisionConfig),
                "CLIPConfig: text_config and vision_config must be CLIPTextConfig / CLIPVisionConfig (or dicts)")
        self.check_positive("projection_dim")

    @classmethod
    def extra_from_hf(cls, raw: dict[str, Any], where: str) -> dict[str, Any]:
        return {"text_config": CLIPTextConfig.from_hf(raw, where), "vision_config": CLIPVisionConfig.from_hf(raw, where)}

    def extra_to_hf(self) -> dict[str, Any]:
        return {"text_config": self.text_config.to_hf(), "vision_config": self.vision_config.to_hf()}

    def with_attention(self, attention: AttentionSpec | str | dict) -> "CLIPConfig":
        """A copy whose towers use ``attention``: one spec for both, or ``{"text": spec, "vision": spec}``."""
        if isinstance(attention, dict) and attention and set(attention) <= {"text", "vision"}:
            text, vision = attention.get("text"), attention.get("vision")
        else:
            text = vision = attention
        return dataclasses.replace(
            self, text_config=self.text_config if text is None else self.text_config.with_attention(text),
            vision_config=self.vision_config if vision is None else self.vision_config.with_attention(vision),
        )


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------
class _StretchableText:
    """``stretch_text_context`` for every model with a text tower (reached as ``self.text_model``)."""

    text_model: CLIPTextTower

    def stretch_text_context(self, new_length: int) -> None:
        """Let the text tower read ``new_length`` tokens: its position table is linearly interpolated
        to ``new_length`` rows in place, and ``max_position_embeddings`` follows.

        The interpolated positions were never trained, so texts that relied on the trained ones may
        score differently (accuracy may drop); truncating long texts is the safe alternative.
        """
        require(isinstance(new_length, int) and new_length > 0,
                f"stretch_text_context: new_length must be a positive integer, got {new_length!r}")
        self.text_model.stretch_context(new_length)


class _OneTowerOfCLIP:
    """Loading for the one-tower models: a whole ``CLIPModel`` checkpoint loads too, as in
    ``transformers``; its other tower, other projection and temperature are left out."""

    def load_hf_state_dict(self, hf_state: dict[str, Tensor], source: str = "the state dict", **options: Any) -> None:
        """Load Hugging Face-named weights of this model, or of a whole ``CLIPModel``, strictly (see
        :meth:`PretrainedModel.load_hf_state_dict`)."""
        part = one_tower_of_clip_model(hf_state, self.key_map(self.config))  # type: ignore[attr-defined]
        super().load_hf_state_dict(part, source, **options)  # type: ignore[misc]


class CLIPModel(_StretchableText, PretrainedModel):
    """Both towers, their projections and the temperature (Hugging Face ``CLIPModel``).

    Parameters: ``two_tower.tower_a`` (vision), ``two_tower.tower_b`` (text), ``two_tower.proj_a`` /
    ``proj_b``, ``two_tower.logit_scale``; reachable as ``vision_model``, ``text_model``,
    ``visual_projection``, ``text_projection`` and ``logit_scale``, as in ``transformers``.
    """

    model_type: ClassVar[str] = "clip"
    architectures: ClassVar[tuple[str, ...]] = ("CLIPModel",)
    config_class: ClassVar[type] = CLIPConfig

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__(config)
        text, vision = config.text_config, config.vision_config
        self.two_tower = TwoTower(CLIPVisionTower(vision), CLIPTextTower(text), vision.d_model, text.d_model,
                                  config.projection_dim, projection_bias=False,
                                  logit_scale_init=config.logit_scale_init_value)
        init_clip_weights(self, config.initializer_factor)

    # transformers' attribute names
    vision_model = property(lambda self: self.two_tower.tower_a, doc="The image tower.")
    text_model = property(lambda self: self.two_tower.tower_b, doc="The text tower.")  # type: ignore[assignment]
    visual_projection = property(lambda self: self.two_tower.proj_a, doc="Image features -> shared space.")
    text_projection = property(lambda self: self.two_tower.proj_b, doc="Text features -> shared space.")
    logit_scale = property(lambda self: self.two_tower.logit_scale, doc="The log temperature (a parameter).")

    def clamp_logit_scale_(self) -> None:
        """Clip the temperature parameter to [0, ln 100] (call after each optimiser step when training)."""
        self.two_tower.clamp_logit_scale_()

    def get_text_features(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                          position_ids: Tensor | None = None, output_attentions: bool = False,
                          output_hidden_states: bool = False) -> BaseModelOutputWithPooling:
        """The text tower's output whose ``pooler_output`` is the projected (not normalised) text features."""
        out = self.text_model(input_ids, attention_mask, position_ids, output_attentions, output_hidden_states)
        return dataclasses.replace(out, pooler_output=self.text_projection(out.pooler_output))

    def get_image_features(self, pixel_values: Tensor, interpolate_pos_encoding: bool = False,
                           output_attentions: bool = False,
                           output_hidden_states: bool = False) -> BaseModelOutputWithPooling:
        """The image tower's output whose ``pooler_output`` is the projected (not normalised) image features."""
        out = self.vision_model(pixel_values, interpolate_pos_encoding, output_attentions, output_hidden_states)
        return dataclasses.replace(out, pooler_output=self.visual_projection(out.pooler_output))

    def forward(
        self, input_ids: Tensor | None = None, pixel_values: Tensor | None = None,
        attention_mask: Tensor | None = None, position_ids: Tensor | None = None, return_loss: bool | None = None,
        output_attentions: bool | None = None, output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> CLIPOutput:
        """Every image against every text: ``logits_per_image`` (images, texts) and its transpose.

        ``return_loss``: the symmetric contrastive loss, pairing image i with text i (so both
        batches must have one size).
        """
        if input_ids is None or pixel_values is None:
            raise ConfigError("CLIPModel needs both input_ids and pixel_values; for one modality use "
                              "get_text_features(input_ids) or get_image_features(pixel_values)")
        if return_loss and input_ids.shape[0] != pixel_values.shape[0]:
            raise ShapeError(
                f"CLIPModel: return_loss pairs image i with text i, so both batches need one size; got "
                f"{pixel_values.shape[0]} images and {input_ids.shape[0]} texts"
            )
        flags = {"output_attentions": bool(output_attentions), "output_hidden_states": bool(output_hidden_states)}
        out = self.two_tower(
            {"pixel_values": pixel_values, "interpolate_pos_encoding": interpolate_pos_encoding, **flags},
            {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, **flags},
            return_loss=bool(return_loss),
        )
        # transformers reports the towers' pooled outputs after projection
        vision = dataclasses.replace(out.outputs_a, pooler_output=self.visual_projection(out.features_a))
        text = dataclasses.replace(out.outputs_b, pooler_output=self.text_projection(out.features_b))
        return CLIPOutput(loss=out.loss, logits_per_image=out.logits_per_a, logits_per_text=out.logits_per_b,
                          text_embeds=out.embeds_b, image_embeds=out.embeds_a, text_model_output=text,
                          vision_model_output=vision)

    @classmethod
    def key_map(cls, config: CLIPConfig) -> KeyMap:
        return clip_model_key_map()


class CLIPTextModel(_StretchableText, _OneTowerOfCLIP, PretrainedModel):
    """The text tower alone (Hugging Face ``CLIPTextModel``): states and the end-of-text state as pooler output."""

    model_type: ClassVar[str] = "clip_text_model"
    architectures: ClassVar[tuple[str, ...]] = ("CLIPTextModel",)
    config_class: ClassVar[type] = CLIPTextConfig
    hf_save_prefix: ClassVar[str] = "text_model."

    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__(config)
        self.text_model = CLIPTextTower(config)
        init_clip_weights(self, config.initializer_factor)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                output_attentions: bool | None = None,
                output_hidden_states: bool | None = None) -> BaseModelOutputWithPooling:
        """Every token's state (final norm applied) and the end-of-text state."""
        return self.text_model(input_ids, attention_mask, position_ids, bool(output_attentions),
                               bool(output_hidden_states))

    @classmethod
    def key_map(cls, config: CLIPTextConfig) -> KeyMap:
        return text_model_key_map()


class CLIPTextModelWithProjection(_StretchableText, _OneTowerOfCLIP, PretrainedModel):
    """The text tower and its projection (Hugging Face ``CLIPTextModelWithProjection``)."""

    model_type: ClassVar[str] = "clip_text_model"
    architectures: ClassVar[tuple[str, ...]] = ("CLIPTextModelWithProjection",)
    config_class: ClassVar[type] = CLIPTextConfig

    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__(config)
        self.text_model = CLIPTextTower(config)
        self.text_projection = nn.Linear(config.d_model, config.projection_dim, bias=False)
        init_clip_weights(self, config.initializer_factor)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None) -> CLIPTextModelOutput:
        """``text_embeds``: the projected end-of-text state (not normalised), with the tower's states."""
        out = self.text_model(input_ids, attention_mask, position_ids, bool(output_attentions),
                              bool(output_hidden_states))
        return CLIPTextModelOutput(text_embeds=self.text_projection(out.pooler_output),
                                   last_hidden_state=out.last_hidden_state, hidden_states=out.hidden_states,
                                   attentions=out.attentions)

    @classmethod
    def key_map(cls, config: CLIPTextConfig) -> KeyMap:
        return text_projection_key_map()


class CLIPVisionModel(_OneTowerOfCLIP, PretrainedModel):
    """The image tower alone (Hugging Face ``CLIPVisionModel``): states and the normed class token."""

    model_type: ClassVar[str] = "clip_vision_model"
    architectures: ClassVar[tuple[str, ...]] = ("CLIPVisionModel",)
    config_class: ClassVar[type] = CLIPVisionConfig
    hf_save_prefix: ClassVar[str] = "vision_model."

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__(config)
        self.vision_model = CLIPVisionTower(config)
        init_clip_weights(self, config.initializer_factor)

    def forward(self, pixel_values: Tensor, interpolate_pos_encoding: bool = False,
                output_attentions: bool | None = None,
                output_hidden_states: bool | None = None) -> BaseModelOutputWithPooling:
        """Every patch's state and the normed class token as ``pooler_output``."""
        return self.vision_model(pixel_values, interpolate_pos_encoding, bool(output_attentions),
                                 bool(output_hidden_states))

    @classmethod
    def key_map(cls, config: CLIPVisionConfig) -> KeyMap:
        return vision_model_key_map()


class CLIPVisionModelWithProjection(_OneTowerOfCLIP, PretrainedModel):
    """The image tower and its projection (Hugging Face ``CLIPVisionModelWithProjection``)."""

    model_type: ClassVar[str] = "clip_vision_model"
    architectures: ClassVar[tuple[str, ...]] = ("CLIPVisionModelWithProjection",)
    config_class: ClassVar[type] = CLIPVisionConfig

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__(config)
        self.vision_model = CLIPVisionTower(config)
        self.visual_projection = nn.Linear(config.d_model, config.projection_dim, bias=False)
        init_clip_weights(self, config.initializer_factor)

    def forward(self, pixel_values: Tensor, interpolate_pos_encoding: bool = False,
                output_attentions: bool | None = None,
                output_hidden_states: bool | None = None) -> CLIPVisionModelOutput:
        """``image_embeds``: the projected class token (not normalised), with the tower's states."""
        out = self.vision_model(pixel_values, interpolate_pos_encoding, bool(output_attentions),
                                bool(output_hidden_states))
        return CLIPVisionModelOutput(image_embeds=self.visual_projection(out.pooler_output),
                                     last_hidden_state=out.last_hidden_state, hidden_states=out.hidden_states,
                                     attentions=out.attentions)

    @classmethod
    def key_map(cls, config: CLIPVisionConfig) -> KeyMap:
        return vision_projection_key_map()


# The first class of each model_type is what a config.json without "architectures" loads as.
register_model(CLIPModel)
register_model(CLIPTextModel)
register_model(CLIPTextModelWithProjection)
register_model(CLIPVisionModel)
register_model(CLIPVisionModelWithProjection)
