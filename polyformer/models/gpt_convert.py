"""The literal key maps between Hugging Face GPT-2 / GPT-Neo / GPT-J checkpoints and polyformer.

Hugging Face names are written out in full (``transformer.`` prefix included) so that
``save_pretrained`` writes exactly the keys ``GPT2LMHeadModel`` & co. load.
"""

from __future__ import annotations

from polyformer.convert.keymap import KeyMap, Rule, split_rows, transpose

L = "decoder.layers.{}"  # our layer prefix
QKV = (f"{L}.attn.q_proj", f"{L}.attn.k_proj", f"{L}.attn.v_proj")

_EMBEDDINGS = [
    Rule("transformer.wte.weight", "wte.weight"),
    Rule("transformer.wpe.weight", "wpe.weight"),
]
_FINAL = [
    Rule("transformer.ln_f.weight", "decoder.final_norm.weight"),
    Rule("transformer.ln_f.bias", "decoder.final_norm.bias"),
    Rule("lm_head.weight", "lm_head.weight"),
]


def _norm(hf: str, ours: str) -> list[Rule]:
    return [Rule(f"{hf}.weight", f"{ours}.weight"), Rule(f"{hf}.bias", f"{ours}.bias")]


def _linear(hf: str, ours: str, bias: bool = True) -> list[Rule]:
    return [Rule(f"{hf}.weight", f"{ours}.weight")] + ([Rule(f"{hf}.bias", f"{ours}.bias")] if bias else [])


def _conv1d(hf: str, ours: str) -> list[Rule]:
    """GPT-2's Conv1D stores (in, out): transpose to nn.Linear's (out, in)."""
    return [Rule(f"{hf}.weight", f"{ours}.weight", *transpose()), Rule(f"{hf}.bias", f"{ours}.bias")]


GPT2_RULES = [
    *_EMBEDDINGS,
    *_norm("transformer.h.{}.ln_1", f"{L}.attn_norm"),
    # one fused (in, 3·d) Conv1D for q, k, v
    Rule("transformer.h.{}.attn.c_attn.weight", tuple(f"{p}.weight" for p in QKV), *split_rows(3, transposed=True)),
    Rule("transformer.h.{}.attn.c_attn.bias", tuple(f"{p}.bias" for p in QKV), *split_rows(3)),
    *_conv1d("transformer.h.{}.attn.c_proj", f"{L}.attn.out_proj"),
    *_norm("transformer.h.{}.ln_2", f"{L}.mlp_norm"),
    *_conv1d("transformer.h.{}.mlp.c_fc", f"{L}.mlp.fc_in"),
    *_conv1d("transformer.h.{}.mlp.c_proj", f"{L}.mlp.fc_out"),
    *_FINAL,
]

GPT_NEO_RULES = [
    *_EMBEDDINGS,
    *_norm("transformer.h.{}.ln_1", f"{L}.attn_norm"),
    *_linear("transformer.h.{}.attn.attention.q_proj", f"{L}.attn.q_proj", bias=False),
    *_linear("transformer.h.{}.attn.attention.k_proj", f"{L}.attn.k_proj", bias=False),
    *_linear("transformer.h.{}.attn.attention.v_proj", f"{L}.attn.v_proj", bias=False),
    *_linear("transformer.h.{}.attn.attention.out_proj", f"{L}.attn.out_proj"),
    *_norm("transformer.h.{}.ln_2", f"{L}.mlp_norm"),
    *_linear("transformer.h.{}.mlp.c_fc", f"{L}.mlp.fc_in"),
    *_linear("transformer.h.{}.mlp.c_proj", f"{L}.mlp.fc_out"),
    *_FINAL,
]

GPTJ_RULES = [
    Rule("transformer.wte.weight", "wte.weight"),
    *_norm("transformer.h.{}.ln_1", f"{L}.attn_norm"),  # one norm feeds attention and MLP
    *_linear("transformer.h.{}.attn.q_proj", f"{L}.attn.q_proj", bias=False),
    *_linear("transformer.h.{}.attn.k_proj", f"{L}.attn.k_proj", bias=False),
    *_linear("transformer.h.{}.attn.v_proj", f"{L}.attn.v_proj", bias=False),
    *_linear("transformer.h.{}.attn.out_proj", f"{L}.attn.out_proj", bias=False),
    *_linear("transformer.h.{}.mlp.fc_in", f"{L}.mlp.fc_in"),
    *_linear("transformer.h.{}.mlp.fc_out", f"{L}.mlp.fc_out"),
    *_FINAL,
    Rule("lm_head.bias", "lm_head.bias"),
]

# Buffers older checkpoints carry (causal-mask tables, rotary tables): no weights.
_IGNORED = {
    "gpt2": ("transformer.h.{}.attn.bias", "transformer.h.{}.attn.masked_bias"),
    "gpt_neo": ("transformer.h.{}.attn.attention.bias", "transformer.h.{}.attn.attention.masked_bias"),
    "gptj": ("transformer.h.{}.attn.bias", "transformer.h.{}.attn.masked_bias",
             "transformer.h.{}.attn.embed_positions"),
}
_RULES = {"gpt2": GPT2_RULES, "gpt_neo": GPT_NEO_RULES, "gptj": GPTJ_RULES}


def gpt_key_map(variant: str) -> KeyMap:
    """The key map of ``variant`` ("gpt2", "gpt_neo" or "gptj")."""
    return KeyMap(list(_RULES[variant]), ignore=_IGNORED[variant])
