"""The registered model families: one :func:`register_family` each.

Each entry says how to build the family's model from a config dict (plus the size the data
decides), which task it trains on, how a sweep's ladder size maps to its config, and how its
parameters split into embeddings and the rest. A new family (wav2vec 2.0, ...) adds one
entry here.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from polyformer.errors import ConfigError
from polyformer.train.models import Builder, Family, count_by_prefix, register_family


def _builder(module: str, config_name: str, model_name: str, family: str, size_field: str = "vocab_size") -> Builder:
    """A builder that imports ``polyformer.models.<module>`` on first use (training must not load
    every family) and fills ``size_field`` with the size the data decides: the vocabulary always,
    the number of classes only when the config names no labels of its own."""

    def build(config: dict[str, Any], size: int | None) -> nn.Module:
        classes = importlib.import_module(f"polyformer.models.{module}")
        values = dict(config)
        if size is not None:
            if size_field == "vocab_size":
                values["vocab_size"] = size
            elif "id2label" not in values:
                values.setdefault(size_field, size)
        try:
            return getattr(classes, model_name)(getattr(classes, config_name)(**values))
        except TypeError as error:
            raise ConfigError(f"model config for {family!r}: {error}") from None

    return build


# ----- GPT: causal language model on a token stream --------------------------------------------------
register_family(Family(
    name="gpt", build=_builder("gpt", "GPTConfig", "GPTLMHeadModel", "gpt"), task="next-token",
    description="GPT-2 / GPT-Neo / GPT-J causal language model (next-token on a prepared token folder)",
    # A position table exactly as long as the training sequences.
    seq_len_config=lambda seq_len: {"n_positions": seq_len},
))


# ----- iGPT: next pixel of palette-quantised images -------------------------------------------------
register_family(Family(
    name="igpt", build=_builder("igpt", "ImageGPTConfig", "ImageGPTForCausalImageModeling", "igpt"), task="next-pixel",
    description="Image GPT: next pixel of palette-quantised images (data: mnist)",
    count=lambda model: count_by_prefix(model, ("transformer.wte.", "transformer.wpe.")),
    tokens_per_example=lambda model: model.config.n_positions,  # one token per pixel
))


# ----- ViT: image classification -----------------------------------------------------------------------
register_family(Family(
    name="vit", build=_builder("vit", "ViTConfig", "ViTForImageClassification", "vit", size_field="num_labels"), task="classification",
    description="Vision Transformer image classifier (data: mnist)",
    # ViT's MLP is 4x wide (Dosovitskiy et al.'s ratio) on every rung of a sweep.
    size_config=lambda n_layers, d_model, n_heads: {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads,
                                                    "d_ff": 4 * d_model},
    # Patch projection, class token and position table play the part of a text model's embeddings.
    count=lambda model: count_by_prefix(model, ("vit.embeddings.",)),
    tokens_per_example=lambda model: model.config.num_patches + 1,  # patches and the class token
    no_decay=("vit.embeddings.position_embeddings",),
))


# ----- BERT: masked language model on a token stream ------------------------------------------------
register_family(Family(
    name="bert", build=_builder("bert", "BertConfig", "BertForMaskedLM", "bert"), task="masked-lm",
    description="BERT with its masked-LM head (task_options: mask_token_id, the tokenizer's [MASK])",
    seq_len_config=lambda seq_len: {"max_position_embeddings": seq_len},
    # word, position and token-type tables (and their norm) are the embeddings
    count=lambda model: count_by_prefix(model, ("bert.embeddings.",)),
))


# ----- CLIP: contrastive image-text pairs ------------------------------------------------------------
# Top-level keys of a clip config that go to both towers (a sweep's rung) or to one of them (what
# the data decides: the image size, the text context); they win over the towers' own dicts.
_CLIP_SHARED = ("n_layers", "d_model", "n_heads", "d_ff", "activation", "dropout", "attention", "norm_eps")
_CLIP_TEXT_ONLY = ("vocab_size", "max_position_embeddings", "pad_token_id", "bos_token_id", "eos_token_id")
_CLIP_VISION_ONLY = ("image_size", "patch_size", "num_channels")
_CLIP_POSITIONS = ("two_tower.tower_a.embeddings.position_embedding.weight",
                   "two_tower.tower_b.embeddings.position_embedding.weight")


def _build_clip(config: dict[str, Any], size: int | None) -> nn.Module:
    """A CLIPModel from ``{"text_config": {...}, "vision_config": {...}, "projection_dim": ...}``.

    Top-level ``n_layers`` / ``d_model`` / ``n_heads`` / ``d_ff`` (and the other shared fields)
    set *both* towers; top-level ``image_size`` / ``patch_size`` go to the vision tower and
    ``max_position_embeddings`` / token ids to the text tower (a sweep merges configs one level
    deep, so what the rung and the data decide sits at the top). ``size`` is the vocabulary.
    """
    classes = importlib.import_module("polyformer.models.clip")
    values = dict(config)
    shared = {name: values.pop(name) for name in _CLIP_SHARED if name in values}
    text = {**dict(values.pop("text_config", None) or {}), **shared,
            **{name: values.pop(name) for name in _CLIP_TEXT_ONLY if name in values}}
    vision = {**dict(values.pop("vision_config", None) or {}), **shared,
              **{name: values.pop(name) for name in _CLIP_VISION_ONLY if name in values}}
    if size is not None:
        text["vocab_size"] = size
    try:
        return classes.CLIPModel(classes.CLIPConfig(text_config=classes.CLIPTextConfig(**text),
                                                    vision_config=classes.CLIPVisionConfig(**vision), **values))
    except TypeError as error:
        raise ConfigError(f"model config for 'clip': {error}") from None


def _clip_tokens(model: nn.Module) -> int:
    """Patches + class token of the image, and the text context."""
    vision, text = model.config.vision_config, model.config.text_config
    return (vision.image_size // vision.patch_size) ** 2 + 1 + text.max_position_embeddings


register_family(Family(
    name="clip", build=_build_clip, task="contrastive",
    description="CLIP: text and image towers trained with the symmetric contrastive loss (data: shapes)",
    # One rung sizes both towers alike, with CLIP's 4x MLP and a shared space as wide as the towers.
    size_config=lambda n_layers, d_model, n_heads: {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads,
                                                    "d_ff": 4 * d_model, "projection_dim": d_model},
    # Token and position tables, patch projection and class token are the embeddings.
    count=lambda model: count_by_prefix(model, ("two_tower.tower_a.embeddings.", "two_tower.tower_b.embeddings.")),
    tokens_per_example=_clip_tokens,
    no_decay=_CLIP_POSITIONS,
))


# ----- TimeSformer: video classification --------------------------------------------------------------
def _timesformer_tokens(model: nn.Module) -> int:
    """Every frame's patches and the class token."""
    return model.config.num_frames * model.config.num_patches + 1


_build_timesformer_zero_time = _builder("timesformer", "TimesformerConfig", "TimesformerForVideoClassification",
                                      "timesformer", size_field="num_labels")


def _build_timesformer(config: dict[str, Any], size: int | None) -> nn.Module:
    """A TimeSformer video classifier whose time table starts random (truncated N(0, initializer_range),
    as the space table), not at zero as ``transformers`` starts it.

    Zero suits a model that starts from an image model; trained from scratch, it leaves the frames
    exchangeable (every block treats them alike and the class token averages them), so on data where
    only the order of the frames tells the label the gradient has, on average, no direction that
    breaks the tie, and the run sits at chance. A resumed run loads its checkpoint over this anyway.
    """
    model = _build_timesformer_zero_time(config, size)
    table = getattr(getattr(getattr(model, "timesformer", None), "embeddings", None), "time_embeddings", None)
    if isinstance(table, nn.Parameter):
        with torch.no_grad():
            nn.init.trunc_normal_(table, std=model.config.initializer_range)
    return model


register_family(Family(
    name="timesformer",
    build=_build_timesformer,
    task="classification",
    description="TimeSformer video classifier: pixel_values (B, T, C, H, W) (data: moving-digits)",
    # as ViT: a 4x wide MLP on every rung of a sweep
    size_config=lambda n_layers, d_model, n_heads: {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads,
                                                    "d_ff": 4 * d_model},
    # patch projection, class token, space and time position tables play the part of embeddings
    count=lambda model: count_by_prefix(model, ("timesformer.embeddings.",)),
    tokens_per_example=_timesformer_tokens,
    no_decay=("timesformer.embeddings.position_embeddings", "timesformer.embeddings.time_embeddings"),
))


# ----- TAPAS: question answering over tables --------------------------------------------------------
register_family(Family(
    name="tapas", build=_builder("tapas", "TapasConfig", "TapasForQuestionAnswering", "tapas"), task="model-loss",
    description="TAPAS table question answering: cell selection and aggregation, the model's own loss "
                "(examples: tokenised tables with labels, aggregation_labels, numeric_values)",
    # word, position, segment and the six table-coordinate tables (and their norm) are the embeddings
    count=lambda model: count_by_prefix(model, ("tapas.embeddings.",)),
))
