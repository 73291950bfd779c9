"""CLIP checkpoints <-> polyformer: one literal key map per tower, composed for each model class.

Hugging Face names (``text_model.`` / ``vision_model.`` before each tower)::

    text_model.embeddings.token_embedding.weight      text_model.encoder.layers.0.self_attn.q_proj.weight
    text_model.final_layer_norm.weight                 vision_model.embeddings.class_embedding
    vision_model.pre_layrnorm.weight                   vision_model.post_layernorm.weight
    text_projection.weight   visual_projection.weight   logit_scale

Ours: a tower's blocks are the core's (``decoder.layers.{i}.attn.q_proj``, ``encoder.layers.{i}.mlp.fc_in``,
...); in ``CLIPModel`` the towers sit in a :class:`~polyformer.compose.two_tower.TwoTower` as
``two_tower.tower_a`` (vision) and ``two_tower.tower_b`` (text), with ``proj_a`` / ``proj_b`` /
``logit_scale``.

transformers 5 saves a bare ``CLIPTextModel`` / ``CLIPVisionModel`` without the tower prefix and
transformers 4 with it; both load. Saving writes the prefixed form, which both versions read.

A one-tower model also loads from a whole ``CLIPModel`` checkpoint (:func:`one_tower_of_clip_model`
drops what it has no place for), as ``transformers``' one-tower classes do.
"""

from __future__ import annotations

from torch import Tensor

from polyformer.convert.keymap import KeyMap, Rule

__all__ = [
    "clip_model_key_map", "one_tower_of_clip_model", "text_key_map", "text_model_key_map", "text_projection_key_map", "vision_key_map",
    "vision_model_key_map", "vision_projection_key_map",
]

_WB = ("weight", "bias")

#: one block, Hugging Face's names -> the core's
_BLOCK = [
    ("self_attn.q_proj", "attn.q_proj"),
    ("self_attn.k_proj", "attn.k_proj"),
    ("self_attn.v_proj", "attn.v_proj"),
    ("self_attn.out_proj", "attn.out_proj"),
    ("layer_norm1", "attn_norm"),
    ("mlp.fc1", "mlp.fc_in"),
    ("mlp.fc2", "mlp.fc_out"),
    ("layer_norm2", "mlp_norm"),
]

#: transformers 4 stored the position-id buffers in some checkpoints; they carry no weights
_BUFFERS = ("embeddings.position_ids",)


def _blocks(stack: str) -> list[Rule]:
    return [Rule(f"encoder.layers.{{}}.{theirs}.{s}", f"{stack}.layers.{{}}.{mine}.{s}")
            for theirs, mine in _BLOCK for s in _WB]


def text_key_map() -> KeyMap:
    """The text tower on its own (no prefix either side): embeddings, causal blocks, final norm."""
    rules = [
        Rule("embeddings.token_embedding.weight", "embeddings.token_embedding.weight"),
        Rule("embeddings.position_embedding.weight", "embeddings.position_embedding.weight"),
        *_blocks("decoder"),
        *[Rule(f"final_layer_norm.{s}", f"decoder.final_norm.{s}") for s in _WB],
    ]
    return KeyMap(rules, ignore=_BUFFERS)


def vision_key_map() -> KeyMap:
    """The vision tower on its own: patch embedding, class token, positions, pre-norm, blocks, post-norm."""
    rules = [
        Rule("embeddings.class_embedding", "embeddings.class_embedding"),
        Rule("embeddings.patch_embedding.weight", "embeddings.patch_embedding.weight"),
        Rule("embeddings.position_embedding.weight", "embeddings.position_embedding.weight"),
        *[Rule(f"pre_layrnorm.{s}", f"pre_norm.{s}") for s in _WB],
        *_blocks("encoder"),
        *[Rule(f"post_layernorm.{s}", f"post_norm.{s}") for s in _WB],
    ]
    return KeyMap(rules, ignore=_BUFFERS)


def text_model_key_map() -> KeyMap:
    """``CLIPTextModel``: ours ``text_model.*``; on disk with or without the ``text_model.`` prefix."""
    return KeyMap.merge(text_key_map().with_prefix("", "text_model."), hf_prefixes=("text_model.", ""))


def vision_model_key_map() -> KeyMap:
    """``CLIPVisionModel``: ours ``vision_model.*``; on disk with or without the ``vision_model.`` prefix."""
    return KeyMap.merge(vision_key_map().with_prefix("", "vision_model."), hf_prefixes=("vision_model.", ""))


def text_projection_key_map() -> KeyMap:
    """``CLIPTextModelWithProjection``: the tower under ``text_model.`` plus ``text_projection``."""
    return KeyMap.merge(text_key_map().with_prefix("text_model.", "text_model."),
                        KeyMap([Rule("text_projection.weight", "text_projection.weight")]))


def vision_projection_key_map() -> KeyMap:
    """``CLIPVisionModelWithProjection``: the tower under ``vision_model.`` plus ``visual_projection``."""
    return KeyMap.merge(vision_key_map().with_prefix("vision_model.", "vision_model."),
                        KeyMap([Rule("visual_projection.weight", "visual_projection.weight")]))


def clip_model_key_map() -> KeyMap:
    """``CLIPModel``: both towers, both projections and the temperature, in our ``two_tower``."""
    return KeyMap.merge(
        vision_key_map().with_prefix("vision_model.", "two_tower.tower_a."),
        text_key_map().with_prefix("text_model.", "two_tower.tower_b."),
        KeyMap([
            Rule("visual_projection.weight", "two_tower.proj_a.weight"),
            Rule("text_projection.weight", "two_tower.proj_b.weight"),
            Rule("logit_scale", "two_tower.logit_scale"),
        ]),
    )


def one_tower_of_clip_model(hf_state: dict[str, Tensor], key_map: KeyMap) -> dict[str, Tensor]:
    """The part of a whole ``CLIPModel`` checkpoint that a one-tower model with ``key_map`` loads.

    A ``CLIPModel`` checkpoint (recognised by its ``logit_scale``) also holds the other tower, the
    other projection and the temperature; those weights are dropped here. Keys that no CLIP model
    has stay, so strict loading still names them, and a weight of the tower being loaded that is
    missing or mis-shaped is still an error. Any other checkpoint is returned as it is.
    """
    if "logit_scale" not in hf_state:
        return hf_state
    _, not_ours = key_map.to_ours(hf_state)
    _, not_clip = clip_model_key_map().to_ours({k: hf_state[k] for k in not_ours})
    drop = set(not_ours) - set(not_clip)
    return {k: v for k, v in hf_state.items() if k not in drop}
