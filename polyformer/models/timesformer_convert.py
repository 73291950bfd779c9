"""TimeSformer checkpoints <-> polyformer: the literal key map of ``TimesformerForVideoClassification``.

Hugging Face fuses q, k and v into one ``qkv`` linear (rows q, then k, then v); ours are three
``nn.Linear`` layers, so those rules split and re-join rows. A divided block has a second attention
(``temporal_attention``), its norm and the ``temporal_dense`` projection; ``space_only`` has no
time table. ``TimesformerModel`` is the same map without the ``timesformer.`` prefix and classifier.
"""

from __future__ import annotations

from polyformer.convert.keymap import KeyMap, Rule, split_rows

__all__ = ["timesformer_key_map"]

_WB = ("weight", "bias")


def _attention(hf: str, ours: str, qkv_bias: bool) -> list[Rule]:
    """One ``TimeSformerAttention`` (fused qkv + output dense) <-> our q/k/v/out projections."""
    qkv = tuple(f"{ours}.{p}_proj" for p in "qkv")
    rules = [Rule(f"{hf}.attention.qkv.weight", tuple(f"{k}.weight" for k in qkv), *split_rows(3))]
    if qkv_bias:
        rules.append(Rule(f"{hf}.attention.qkv.bias", tuple(f"{k}.bias" for k in qkv), *split_rows(3)))
    return rules + [Rule(f"{hf}.output.dense.{s}", f"{ours}.out_proj.{s}") for s in _WB]


def timesformer_key_map(attention_type: str, qkv_bias: bool, classifier: bool = True) -> KeyMap:
    """The map for one attention type; ``classifier`` False gives ``TimesformerModel``'s (no prefix)."""
    hf, ours = ("timesformer.", "timesformer.") if classifier else ("", "")
    layer, block = f"{hf}encoder.layer.{{}}", f"{ours}encoder.layers.{{}}"
    rules = [
        Rule(f"{hf}embeddings.cls_token", f"{ours}embeddings.cls_token"),
        Rule(f"{hf}embeddings.position_embeddings", f"{ours}embeddings.position_embeddings"),
        *[Rule(f"{hf}embeddings.patch_embeddings.projection.{s}", f"{ours}embeddings.projection.{s}") for s in _WB],
        *_attention(f"{layer}.attention", f"{block}.attn", qkv_bias),
        *[Rule(f"{layer}.layernorm_before.{s}", f"{block}.attn_norm.{s}") for s in _WB],
        *[Rule(f"{layer}.intermediate.dense.{s}", f"{block}.mlp.fc_in.{s}") for s in _WB],
        *[Rule(f"{layer}.output.dense.{s}", f"{block}.mlp.fc_out.{s}") for s in _WB],
        *[Rule(f"{layer}.layernorm_after.{s}", f"{block}.mlp_norm.{s}") for s in _WB],
        *[Rule(f"{hf}layernorm.{s}", f"{ours}encoder.final_norm.{s}") for s in _WB],
    ]
    if attention_type != "space_only":
        rules.append(Rule(f"{hf}embeddings.time_embeddings", f"{ours}embeddings.time_embeddings"))
    if attention_type == "divided_space_time":
        rules += _attention(f"{layer}.temporal_attention", f"{block}.time_attn", qkv_bias)
        rules += [Rule(f"{layer}.temporal_layernorm.{s}", f"{block}.time_norm.{s}") for s in _WB]
        rules += [Rule(f"{layer}.temporal_dense.{s}", f"{block}.time_proj.{s}") for s in _WB]
    if classifier:
        rules += [Rule(f"classifier.{s}", f"classifier.{s}") for s in _WB]
        return KeyMap(rules)
    return KeyMap(rules, hf_prefixes=("timesformer.", ""))
