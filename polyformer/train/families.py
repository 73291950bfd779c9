"""The registered model families: one :func:`register_family` each.

Each entry says how to build the family's model from a config dict (plus the size the data
decides), which task it trains on, how a sweep's ladder size maps to its config, and how its
parameters split into embeddings and the rest. A new family (CLIP, wav2vec 2.0, ...) adds one
entry here.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from polyformer.errors import ConfigError
from polyformer.train.models import Family, count_by_prefix, register_family


def _make(config_class: type, model_class: type, values: dict[str, Any], family: str) -> nn.Module:
    try:
        return model_class(config_class(**values))
    except TypeError as error:
        raise ConfigError(f"model config for {family!r}: {error}") from None


# ----- GPT: causal language model on a token stream --------------------------------------------------
def _build_gpt(config: dict[str, Any], vocab_size: int | None) -> nn.Module:
    from polyformer.models.gpt import GPTConfig, GPTLMHeadModel

    values = dict(config) if vocab_size is None else {**config, "vocab_size": vocab_size}
    return _make(GPTConfig, GPTLMHeadModel, values, "gpt")


register_family(Family(
    name="gpt", build=_build_gpt, task="next-token",
    description="GPT-2 / GPT-Neo / GPT-J causal language model (next-token on a prepared token folder)",
    # A position table exactly as long as the training sequences.
    seq_len_config=lambda seq_len: {"n_positions": seq_len},
))


# ----- iGPT: next pixel of palette-quantised images -------------------------------------------------
def _build_igpt(config: dict[str, Any], vocab_size: int | None) -> nn.Module:
    from polyformer.models.igpt import ImageGPTConfig, ImageGPTForCausalImageModeling

    values = dict(config) if vocab_size is None else {**config, "vocab_size": vocab_size}
    return _make(ImageGPTConfig, ImageGPTForCausalImageModeling, values, "igpt")


register_family(Family(
    name="igpt", build=_build_igpt, task="next-pixel",
    description="Image GPT: next pixel of palette-quantised images (data: mnist)",
    count=lambda model: count_by_prefix(model, ("transformer.wte.", "transformer.wpe.")),
    tokens_per_example=lambda model: model.config.n_positions,  # one token per pixel
))


# ----- ViT: image classification -----------------------------------------------------------------------
def _build_vit(config: dict[str, Any], vocab_size: int | None) -> nn.Module:
    from polyformer.models.vit import ViTConfig, ViTForImageClassification

    values = dict(config)
    if vocab_size is not None and "id2label" not in values:
        values.setdefault("num_labels", vocab_size)
    return _make(ViTConfig, ViTForImageClassification, values, "vit")


register_family(Family(
    name="vit", build=_build_vit, task="classification",
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
def _build_bert(config: dict[str, Any], vocab_size: int | None) -> nn.Module:
    from polyformer.models.bert import BertConfig, BertForMaskedLM

    values = dict(config) if vocab_size is None else {**config, "vocab_size": vocab_size}
    return _make(BertConfig, BertForMaskedLM, values, "bert")


register_family(Family(
    name="bert", build=_build_bert, task="masked-lm",
    description="BERT with its masked-LM head (task_options: mask_token_id, the tokenizer's [MASK])",
    seq_len_config=lambda seq_len: {"max_position_embeddings": seq_len},
    # word, position and token-type tables (and their norm) are the embeddings
    count=lambda model: count_by_prefix(model, ("bert.embeddings.",)),
))
