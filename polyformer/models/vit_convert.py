"""ViT checkpoints <-> polyformer: the literal key maps of ``ViTForImageClassification`` and ``ViTModel``.

Two spellings of the same weights exist. What Hugging Face's ``save_pretrained`` writes into
``model.safetensors`` (and every checkpoint published so far) uses the original BERT-style names::

    vit.encoder.layer.0.attention.attention.query.weight
    vit.encoder.layer.0.attention.output.dense.weight
    vit.encoder.layer.0.intermediate.dense.weight

while the modules of transformers 5 are named ``vit.layers.0.attention.q_proj`` / ``o_proj`` /
``mlp.fc1`` (a state dict taken from a live model and saved by hand has those names). Both load;
``save_pretrained`` writes the on-disk spelling, which every transformers version reads.
"""

from __future__ import annotations

from polyformer.convert.keymap import KeyMap, Rule

__all__ = ["vit_classifier_key_map", "vit_model_key_map"]

_WB = ("weight", "bias")


def _encoder_rules(hf: str, ours: str) -> list[Rule]:
    """Embeddings, blocks and final norm as saved on disk; ``hf`` / ``ours`` are key prefixes."""
    layer, block = f"{hf}encoder.layer.{{}}.", f"{ours}encoder.layers.{{}}."
    pairs = [
        ("attention.attention.query", "attn.q_proj"),
        ("attention.attention.key", "attn.k_proj"),
        ("attention.attention.value", "attn.v_proj"),
        ("attention.output.dense", "attn.out_proj"),
        ("layernorm_before", "attn_norm"),
        ("intermediate.dense", "mlp.fc_in"),
        ("output.dense", "mlp.fc_out"),
        ("layernorm_after", "mlp_norm"),
    ]
    rules = [
        Rule(f"{hf}embeddings.cls_token", f"{ours}embeddings.cls_token"),
        Rule(f"{hf}embeddings.position_embeddings", f"{ours}embeddings.position_embeddings"),
    ]
    rules += [Rule(f"{hf}embeddings.patch_embeddings.projection.{s}", f"{ours}embeddings.projection.{s}") for s in _WB]
    rules += [Rule(f"{layer}{theirs}.{s}", f"{block}{mine}.{s}") for theirs, mine in pairs for s in _WB]
    rules += [Rule(f"{hf}layernorm.{s}", f"{ours}encoder.final_norm.{s}") for s in _WB]
    return rules


def _live_layer_aliases(hf: str, ours: str) -> list[Rule]:
    """transformers 5's module names of the same block weights (load only)."""
    layer, block = f"{hf}layers.{{}}.", f"{ours}encoder.layers.{{}}."
    pairs = [
        ("attention.q_proj", "attn.q_proj"),
        ("attention.k_proj", "attn.k_proj"),
        ("attention.v_proj", "attn.v_proj"),
        ("attention.o_proj", "attn.out_proj"),
        ("mlp.fc1", "mlp.fc_in"),
        ("mlp.fc2", "mlp.fc_out"),
        ("layernorm_before", "attn_norm"),
        ("layernorm_after", "mlp_norm"),
    ]
    return [Rule(f"{layer}{theirs}.{s}", f"{block}{mine}.{s}") for theirs, mine in pairs for s in _WB]


def vit_classifier_key_map() -> KeyMap:
    """``ViTForImageClassification``: ``vit.*`` backbone plus ``classifier``; ours: ``vit.*``, ``classifier``."""
    rules = _encoder_rules("vit.", "vit.") + [Rule(f"classifier.{s}", f"classifier.{s}") for s in _WB]
    return KeyMap(rules, aliases=_live_layer_aliases("vit.", "vit."))


def vit_model_key_map(pooler: bool) -> KeyMap:
    """``ViTModel`` (no prefix on disk; a ``vit.`` prefix is accepted too), with its optional pooler."""
    rules = _encoder_rules("", "")
    if pooler:
        rules += [Rule(f"pooler.dense.{s}", f"pooler.{s}") for s in _WB]
    return KeyMap(rules, aliases=_live_layer_aliases("", ""), hf_prefixes=("vit.", ""))
