"""The literal key maps between Hugging Face GPT-2 / GPT-Neo / GPT-J checkpoints and polyformer.

Names are those of the base model; checkpoints may carry them with the ``transformer.`` prefix of
``GPT2LMHeadModel`` & co. or without it (OpenAI's original GPT-2 weights), and ``save_pretrained``
writes them with it. The output head sits outside the base model (``lm_head.*``, never prefixed).
"""

from __future__ import annotations

from polyformer.convert.keymap import KeyMap, Rule, split_rows, transpose

L = "decoder.layers.{}"  # our layer prefix
QKV = (f"{L}.attn.q_proj", f"{L}.attn.k_proj", f"{L}.attn.v_proj")

_EMBEDDINGS = [
    Rule("wte.weight", "wte.weight"),
    Rule("wpe.weight", "wpe.weight"),
]
_FINAL = [
    Rule("ln_f.weight", "decoder.final_norm.weight"),
    Rule("ln_f.bias", "decoder.final_norm.bias"),
    Rule("lm_head.weight", "lm_head.weight", prefixed=False),
]


def _norm(hf: str, ours: str) -> list[Rule]:
    return [Rule(f"{hf}.weight", f"{ours}.weight"), Rule(f"{hf}.bias", f"{ours}.bias")]


def _linear(hf: str, ours: str, bias: bool = True) -> list[Rule]:
    return [Rule(f"{hf}.weight", f"{ours}.weight")] + ([Rule(f"{hf}.bias", f"{ours}.bias")] if bias else [])


def _conv1d(hf: str, ours: str) -> list[Rule]:
    """GPT-2's Conv1D stores (in, out): transpose to nn.Linear's (out, in)."""
    return [Rule(f"{hf}.weight", f"{ours}.weight", *transpose()), Rule(f"{hf}.bias", f"{ours}.bias")]


def gpt2_block_rules(norm_bias: bool = True) -> list[Rule]:
    """One GPT-2 block: fused (in, 3·d) Conv1D for q, k, v, then Conv1D projections.

    ``norm_bias`` False drops the norms' biases (iGPT's norms have none).
    """
    norm = _norm if norm_bias else (lambda hf, ours: [Rule(f"{hf}.weight", f"{ours}.weight")])
    return [
        *norm("h.{}.ln_1", f"{L}.attn_norm"),
        Rule("h.{}.attn.c_attn.weight", tuple(f"{p}.weight" for p in QKV), *split_rows(3, transposed=True)),
        Rule("h.{}.attn.c_attn.bias", tuple(f"{p}.bias" for p in QKV), *split_rows(3)),
        *_conv1d("h.{}.attn.c_proj", f"{L}.attn.out_proj"),
        *norm("h.{}.ln_2", f"{L}.mlp_norm"),
        *_conv1d("h.{}.mlp.c_fc", f"{L}.mlp.fc_in"),
        *_conv1d("h.{}.mlp.c_proj", f"{L}.mlp.fc_out"),
    ]


GPT2_RULES = [*_EMBEDDINGS, *gpt2_block_rules(), *_FINAL]

GPT_NEO_RULES = [
    *_EMBEDDINGS,
    *_norm("h.{}.ln_1", f"{L}.attn_norm"),
    *_linear("h.{}.attn.attention.q_proj", f"{L}.attn.q_proj", bias=False),
    *_linear("h.{}.attn.attention.k_proj", f"{L}.attn.k_proj", bias=False),
    *_linear("h.{}.attn.attention.v_proj", f"{L}.attn.v_proj", bias=False),
    *_linear("h.{}.attn.attention.out_proj", f"{L}.attn.out_proj"),
    *_norm("h.{}.ln_2", f"{L}.mlp_norm"),
    *_linear("h.{}.mlp.c_fc", f"{L}.mlp.fc_in"),
    *_linear("h.{}.mlp.c_proj", f"{L}.mlp.fc_out"),
    *_FINAL,
]

GPTJ_RULES = [
    Rule("wte.weight", "wte.weight"),
    *_norm("h.{}.ln_1", f"{L}.attn_norm"),  # one norm feeds attention and MLP
    *_linear("h.{}.attn.q_proj", f"{L}.attn.q_proj", bias=False),
    *_linear("h.{}.attn.k_proj", f"{L}.attn.k_proj", bias=False),
    *_linear("h.{}.attn.v_proj", f"{L}.attn.v_proj", bias=False),
    *_linear("h.{}.attn.out_proj", f"{L}.attn.out_proj", bias=False),
    *_linear("h.{}.mlp.fc_in", f"{L}.mlp.fc_in"),
    *_linear("h.{}.mlp.fc_out", f"{L}.mlp.fc_out"),
    *_FINAL,
    Rule("lm_head.bias", "lm_head.bias", prefixed=False),
]

# Buffers older checkpoints carry (causal-mask tables, rotary tables): no weights.
_IGNORED = {
    "gpt2": ("h.{}.attn.bias", "h.{}.attn.masked_bias"),
    "gpt_neo": ("h.{}.attn.attention.bias", "h.{}.attn.attention.masked_bias"),
    "gptj": ("h.{}.attn.bias", "h.{}.attn.masked_bias",
             "h.{}.attn.embed_positions"),
}
_RULES = {"gpt2": GPT2_RULES, "gpt_neo": GPT_NEO_RULES, "gptj": GPTJ_RULES}


def gpt_key_map(variant: str) -> KeyMap:
    """The key map of ``variant`` ("gpt2", "gpt_neo" or "gptj")."""
    return KeyMap(list(_RULES[variant]), ignore=_IGNORED[variant], hf_prefixes=("transformer.", ""))
