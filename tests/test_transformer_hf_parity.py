"""The core expresses the Hugging Face families: tiny random HF models, weights copied, same outputs.

The key maps here are test helpers that prove the block layouts match; the production converters
(one literal key map per family) are written separately.
"""

from dataclasses import dataclass

import pytest
import torch

from polyformer import attention
from polyformer.attention import AttentionMechanism, reference_attention
from polyformer.attention import registry as attention_registry
from polyformer.layers import LearnedPositions, TokenEmbedding
from polyformer.options import require
from polyformer.transformer import Block, Decoder, Encoder, TransformerConfig

transformers = pytest.importorskip("transformers")

D, HEADS, LAYERS, VOCAB = 32, 4, 2, 50
ATOL = 1e-5


def _randomise(model):
    """Random weights everywhere (norm scales around 1), so a wrongly mapped tensor shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm_scale = name.endswith("weight") and p.dim() == 1
            p.normal_(1.0 if is_norm_scale else 0.0, 0.2)
    return model.eval()


def _load(module, tensors):
    """Load every parameter of ``module`` from ``tensors`` (strict: nothing missing or extra)."""
    module.load_state_dict({k: v.detach().clone() for k, v in tensors.items()}, strict=True)
    return module.eval()


def _conv1d_qkv(prefix, dst, sd):
    """GPT-2's fused Conv1D c_attn (in, 3*out) -> separate nn.Linear q/k/v (out, in)."""
    w, b = sd[f"{prefix}.c_attn.weight"], sd[f"{prefix}.c_attn.bias"]
    out = {}
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        out[f"{dst}.{name}.weight"] = w[:, i * D : (i + 1) * D].t()
        out[f"{dst}.{name}.bias"] = b[i * D : (i + 1) * D]
    out[f"{dst}.out_proj.weight"] = sd[f"{prefix}.c_proj.weight"].t()
    out[f"{dst}.out_proj.bias"] = sd[f"{prefix}.c_proj.bias"]
    return out


def _copy(sd, pairs):
    """{our key: their tensor} for (our prefix, their prefix, suffixes)."""
    return {f"{ours}.{s}": sd[f"{theirs}.{s}"] for ours, theirs, suffixes in pairs for s in suffixes}


class _Stack(torch.nn.Module):
    """Token + optional learned positions + a polyformer stack: the smallest GPT-like model."""

    def __init__(self, config, n_positions=None, stack=Decoder):
        super().__init__()
        self.wte = TokenEmbedding(VOCAB, D)
        self.wpe = LearnedPositions(n_positions, D) if n_positions else None
        self.stack = stack(config)

    def forward(self, ids, mask=None, position_ids=None):
        if position_ids is None:
            position_ids = torch.arange(ids.shape[1]).expand_as(ids)
        h = self.wte(ids) + (self.wpe(position_ids) if self.wpe is not None else 0)
        return self.stack(h, key_padding_mask=mask, position_ids=position_ids)


def _ids_and_padding(n=10, left=False):
    ids = torch.randint(0, VOCAB, (2, n))
    mask = torch.ones(2, n, dtype=torch.long)
    if left:
        mask[1, :3] = 0
    else:
        mask[1, -3:] = 0
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, position_ids


def _assert_real_positions_close(ours, theirs, mask):
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=ATOL, rtol=ATOL)


# -- decoder families -------------------------------------------------------------------------------
def _gpt2_like_state(sd, norm_suffixes):
    out = {"wte.weight": sd["wte.weight"], "wpe.weight": sd["wpe.weight"]}
    for i in range(LAYERS):
        h, ours = f"h.{i}", f"stack.layers.{i}"
        out.update(_conv1d_qkv(f"{h}.attn", f"{ours}.attn", sd))
        out.update(_copy(sd, [
            (f"{ours}.attn_norm", f"{h}.ln_1", norm_suffixes),
            (f"{ours}.mlp_norm", f"{h}.ln_2", norm_suffixes),
        ]))
        for ours_fc, theirs_fc in (("fc_in", "c_fc"), ("fc_out", "c_proj")):
            out[f"{ours}.mlp.{ours_fc}.weight"] = sd[f"{h}.mlp.{theirs_fc}.weight"].t()
            out[f"{ours}.mlp.{ours_fc}.bias"] = sd[f"{h}.mlp.{theirs_fc}.bias"]
    out.update(_copy(sd, [("stack.final_norm", "ln_f", norm_suffixes)]))
    return out


def test_gpt2_parity():
    hf_config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=D, n_layer=LAYERS, n_head=HEADS)
    hf = _randomise(transformers.GPT2Model(hf_config))
    config = TransformerConfig(d_model=D, n_heads=HEADS, n_layers=LAYERS, activation="gelu_new", norm_eps=1e-5)
    ours = _load(_Stack(config, n_positions=16), _gpt2_like_state(hf.state_dict(), ("weight", "bias")))
    ids, mask, _ = _ids_and_padding()
    _assert_real_positions_close(ours(ids, mask), hf(ids, attention_mask=mask).last_hidden_state, mask)


def test_imagegpt_parity_rms_style_norm_and_quick_gelu():
    hf_config = transformers.ImageGPTConfig(vocab_size=VOCAB, n_positions=16, n_embd=D, n_layer=LAYERS, n_head=HEADS)
    hf = _randomise(transformers.ImageGPTModel(hf_config))
    config = TransformerConfig(
        d_model=D, n_heads=HEADS, n_layers=LAYERS, norm="rmsnorm", norm_eps=1e-5, activation="quick_gelu"
    )
    ours = _load(_Stack(config, n_positions=16), _gpt2_like_state(hf.state_dict(), ("weight",)))
    ids = torch.randint(0, VOCAB, (2, 12))
    torch.testing.assert_close(ours(ids), hf(ids).last_hidden_state, atol=ATOL, rtol=ATOL)


@dataclass
class _WindowOptions:
    window: int = 4

    def __post_init__(self):
        require(self.window > 0, "window must be positive")


class _GPTNeoLocal(AttentionMechanism):
    """GPT-Neo's local layers: query i sees keys j with i - window < j <= i (a test-only mechanism)."""

    name = "_test_gpt_neo_local"
    Options = _WindowOptions

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, scale, q_offset):
        rows = torch.arange(q.shape[-2])[:, None] + q_offset
        allowed = rows - torch.arange(k.shape[-2])[None, :] < self.options.window
        return reference_attention(
            q, k, v, allowed=allowed, causal=causal, key_padding_mask=key_padding_mask, scale=scale, q_offset=q_offset
        )


def test_gpt_neo_parity_unscaled_scores_and_per_layer_local_attention(monkeypatch):
    attention.list()  # load the built-ins before adding the test mechanism
    monkeypatch.setitem(attention_registry._REGISTRY, _GPTNeoLocal.name, _GPTNeoLocal)
    hf_config = transformers.GPTNeoConfig(
        vocab_size=VOCAB, max_position_embeddings=32, hidden_size=D, num_layers=LAYERS, num_heads=HEADS,
        attention_types=[[["global", "local"], 1]], window_size=4,
    )
    hf = _randomise(transformers.GPTNeoModel(hf_config))
    config = TransformerConfig(
        d_model=D, n_heads=HEADS, n_layers=LAYERS, activation="gelu_new", qkv_bias=False, attention_scale=1.0,
        layer_attention={1: {"name": _GPTNeoLocal.name, "options": {"window": 4}}},
    )
    sd = hf.state_dict()
    state = {"wte.weight": sd["wte.weight"], "wpe.weight": sd["wpe.weight"]}
    for i in range(LAYERS):
        h, ours = f"h.{i}", f"stack.layers.{i}"
        state.update(_copy(sd, [
            (f"{ours}.attn.q_proj", f"{h}.attn.attention.q_proj", ("weight",)),
            (f"{ours}.attn.k_proj", f"{h}.attn.attention.k_proj", ("weight",)),
            (f"{ours}.attn.v_proj", f"{h}.attn.attention.v_proj", ("weight",)),
            (f"{ours}.attn.out_proj", f"{h}.attn.attention.out_proj", ("weight", "bias")),
            (f"{ours}.attn_norm", f"{h}.ln_1", ("weight", "bias")),
            (f"{ours}.mlp_norm", f"{h}.ln_2", ("weight", "bias")),
            (f"{ours}.mlp.fc_in", f"{h}.mlp.c_fc", ("weight", "bias")),
            (f"{ours}.mlp.fc_out", f"{h}.mlp.c_proj", ("weight", "bias")),
        ]))
    state.update(_copy(sd, [("stack.final_norm", "ln_f", ("weight", "bias"))]))
    ours = _load(_Stack(config, n_positions=32), state)
    ids = torch.randint(0, VOCAB, (2, 11))
    expected = hf(ids).last_hidden_state
    torch.testing.assert_close(ours(ids), expected, atol=ATOL, rtol=ATOL)
    # The local layer matters: with a global layer 1 the outputs differ.
    ours.stack.layers[1].attn.mechanism = attention.build("dense")
    assert not torch.allclose(ours(ids), expected, atol=1e-3)


def test_gptj_parity_parallel_residual_and_partial_interleaved_rotary_with_left_padding():
    hf_config = transformers.GPTJConfig(
        vocab_size=VOCAB, n_positions=32, n_embd=D, n_layer=LAYERS, n_head=HEADS, rotary_dim=4
    )
    hf = _randomise(transformers.GPTJModel(hf_config))
    config = TransformerConfig(
        d_model=D, n_heads=HEADS, n_layers=LAYERS, activation="gelu_new", parallel_residual=True,
        qkv_bias=False, out_bias=False, rotary={"dim": 4, "interleaved": True},
    )
    sd = hf.state_dict()
    state = {"wte.weight": sd["wte.weight"]}
    for i in range(LAYERS):
        h, ours = f"h.{i}", f"stack.layers.{i}"
        projections = ("q_proj", "k_proj", "v_proj", "out_proj")
        state.update(_copy(sd, [(f"{ours}.attn.{p}", f"{h}.attn.{p}", ("weight",)) for p in projections]))
        state.update(_copy(sd, [
            (f"{ours}.attn_norm", f"{h}.ln_1", ("weight", "bias")),
            (f"{ours}.mlp.fc_in", f"{h}.mlp.fc_in", ("weight", "bias")),
            (f"{ours}.mlp.fc_out", f"{h}.mlp.fc_out", ("weight", "bias")),
        ]))
    state.update(_copy(sd, [("stack.final_norm", "ln_f", ("weight", "bias"))]))
    ours = _load(_Stack(config), state)
    ids, mask, position_ids = _ids_and_padding(left=True)
    expected = hf(ids, attention_mask=mask, position_ids=position_ids).last_hidden_state
    _assert_real_positions_close(ours(ids, mask, position_ids), expected, mask)


def test_llama_parity_rmsnorm_swiglu_and_half_split_rotary():
    hf_config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=D, intermediate_size=48, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=HEADS, rms_norm_eps=1e-6, max_position_embeddings=64,
    )
    hf = _randomise(transformers.LlamaModel(hf_config))
    config = TransformerConfig(
        d_model=D, n_heads=HEADS, n_layers=LAYERS, d_ff=48, norm="rmsnorm", norm_eps=1e-6, mlp="gated",
        activation="silu", qkv_bias=False, out_bias=False, mlp_bias=False, rotary={"interleaved": False},
    )
    sd = hf.state_dict()
    state = {"wte.weight": sd["embed_tokens.weight"], "stack.final_norm.weight": sd["norm.weight"]}
    for i in range(LAYERS):
        h, ours = f"layers.{i}", f"stack.layers.{i}"
        qkv, gated = ("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj", "down_proj")
        state.update(_copy(sd, [(f"{ours}.attn.{p}", f"{h}.self_attn.{p}", ("weight",)) for p in qkv]))
        state.update(_copy(sd, [(f"{ours}.mlp.{p}", f"{h}.mlp.{p}", ("weight",)) for p in gated]))
        state.update(_copy(sd, [
            (f"{ours}.attn.out_proj", f"{h}.self_attn.o_proj", ("weight",)),
            (f"{ours}.attn_norm", f"{h}.input_layernorm", ("weight",)),
            (f"{ours}.mlp_norm", f"{h}.post_attention_layernorm", ("weight",)),
        ]))
    ours = _load(_Stack(config), state)
    ids, mask, position_ids = _ids_and_padding(left=True)
    expected = hf(ids, attention_mask=mask, position_ids=position_ids).last_hidden_state
    _assert_real_positions_close(ours(ids, mask, position_ids), expected, mask)


# -- encoder families ----------------------------------------------------------------------------
def test_bert_parity_post_ln_encoder_with_padding():
    hf_config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=64,
        max_position_embeddings=32,
    )
    hf = _randomise(transformers.BertModel(hf_config, add_pooling_layer=False))
    config = TransformerConfig(d_model=D, n_heads=HEADS, n_layers=LAYERS, d_ff=64, norm_position="post", norm_eps=1e-12)
    sd, state = hf.state_dict(), {}
    for i in range(LAYERS):
        h, ours = f"encoder.layer.{i}", f"layers.{i}"
        wb = ("weight", "bias")
        state.update(_copy(sd, [
            (f"{ours}.attn.q_proj", f"{h}.attention.self.query", wb),
            (f"{ours}.attn.k_proj", f"{h}.attention.self.key", wb),
            (f"{ours}.attn.v_proj", f"{h}.attention.self.value", wb),
            (f"{ours}.attn.out_proj", f"{h}.attention.output.dense", wb),
            (f"{ours}.attn_norm", f"{h}.attention.output.LayerNorm", wb),
            (f"{ours}.mlp.fc_in", f"{h}.intermediate.dense", wb),
            (f"{ours}.mlp.fc_out", f"{h}.output.dense", wb),
            (f"{ours}.mlp_norm", f"{h}.output.LayerNorm", wb),
        ]))
    ours = _load(Encoder(config), state)
    ids, mask, _ = _ids_and_padding()
    expected = hf(ids, attention_mask=mask).last_hidden_state
    got = ours(hf.embeddings(input_ids=ids), key_padding_mask=mask)
    _assert_real_positions_close(got, expected, mask)


def test_vit_parity_pre_ln_encoder_with_final_norm():
    hf_config = transformers.ViTConfig(
        image_size=8, patch_size=2, num_channels=3, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=64,
    )
    hf = _randomise(transformers.ViTModel(hf_config, add_pooling_layer=False))
    config = TransformerConfig(d_model=D, n_heads=HEADS, n_layers=LAYERS, d_ff=64, norm_eps=1e-12)
    sd, wb = hf.state_dict(), ("weight", "bias")
    state = _copy(sd, [("final_norm", "layernorm", wb)])
    for i in range(LAYERS):
        h, ours = f"layers.{i}", f"layers.{i}"
        state.update(_copy(sd, [
            (f"{ours}.attn.q_proj", f"{h}.attention.q_proj", wb),
            (f"{ours}.attn.k_proj", f"{h}.attention.k_proj", wb),
            (f"{ours}.attn.v_proj", f"{h}.attention.v_proj", wb),
            (f"{ours}.attn.out_proj", f"{h}.attention.o_proj", wb),
            (f"{ours}.attn_norm", f"{h}.layernorm_before", wb),
            (f"{ours}.mlp.fc_in", f"{h}.mlp.fc1", wb),
            (f"{ours}.mlp.fc_out", f"{h}.mlp.fc2", wb),
            (f"{ours}.mlp_norm", f"{h}.layernorm_after", wb),
        ]))
    ours = _load(Encoder(config), state)
    pixels = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(ours(hf.embeddings(pixels)), hf(pixels).last_hidden_state, atol=ATOL, rtol=ATOL)


def test_lxmert_cross_modality_layer_parity_with_shared_cross_attention():
    from transformers.models.lxmert.modeling_lxmert import LxmertXLayer

    hf_config = transformers.LxmertConfig(hidden_size=D, num_attention_heads=HEADS, intermediate_size=64)
    hf = _randomise(LxmertXLayer(hf_config))
    config = TransformerConfig(
        d_model=D, n_heads=HEADS, n_layers=1, d_ff=64, norm_position="post", norm_eps=1e-12,
        cross_attention=True, cross_attention_first=True,
    )
    sd, wb = hf.state_dict(), ("weight", "bias")
    shared = _copy(sd, [
        ("cross_attn.q_proj", "visual_attention.att.query", wb),
        ("cross_attn.k_proj", "visual_attention.att.key", wb),
        ("cross_attn.v_proj", "visual_attention.att.value", wb),
        ("cross_attn.out_proj", "visual_attention.output.dense", wb),
        ("cross_norm", "visual_attention.output.LayerNorm", wb),
    ])
    blocks = {}
    sides = (("lang", "lang_self_att", "lang_inter", "lang_output"), ("visn", "visn_self_att", "visn_inter", "visn_output"))
    for side, self_att, inter, output in sides:
        state = dict(shared)
        state.update(_copy(sd, [
            ("attn.q_proj", f"{self_att}.self.query", wb),
            ("attn.k_proj", f"{self_att}.self.key", wb),
            ("attn.v_proj", f"{self_att}.self.value", wb),
            ("attn.out_proj", f"{self_att}.output.dense", wb),
            ("attn_norm", f"{self_att}.output.LayerNorm", wb),
            ("mlp.fc_in", f"{inter}.dense", wb),
            ("mlp.fc_out", f"{output}.dense", wb),
            ("mlp_norm", f"{output}.LayerNorm", wb),
        ]))
        blocks[side] = _load(Block(config), state)
    # One cross-attention module serves both directions, as in LXMERT.
    blocks["visn"].cross_attn, blocks["visn"].cross_norm = blocks["lang"].cross_attn, blocks["lang"].cross_norm

    lang, visn = torch.randn(2, 7, D), torch.randn(2, 5, D)
    lang_mask = torch.ones(2, 7, dtype=torch.bool)
    lang_mask[1, -2:] = False
    visn_mask = torch.ones(2, 5, dtype=torch.bool)

    def additive(mask):
        return (~mask)[:, None, None, :].float() * torch.finfo(torch.float32).min

    lang_out, visn_out = hf(lang, additive(lang_mask), visn, additive(visn_mask))[:2]
    got_lang = blocks["lang"](lang, key_padding_mask=lang_mask, encoder_states=visn, encoder_padding_mask=visn_mask)
    got_visn = blocks["visn"](visn, key_padding_mask=visn_mask, encoder_states=lang, encoder_padding_mask=lang_mask)
    _assert_real_positions_close(got_lang, lang_out, lang_mask)
    torch.testing.assert_close(got_visn, visn_out, atol=ATOL, rtol=ATOL)
