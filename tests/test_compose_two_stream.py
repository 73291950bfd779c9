"""The two-stream cross-modal stack equals Hugging Face's LXMERT encoder on a tiny random model."""

import pytest
import torch

from polyformer.errors import ConfigError, ShapeError
from polyformer.compose import TwoStreamEncoder
from polyformer.transformer import TransformerConfig
from _random_weights import randomise

transformers = pytest.importorskip("transformers")

D, HEADS, FF = 32, 4, 48
L_LAYERS, R_LAYERS, X_LAYERS = 2, 1, 2
WB = ("weight", "bias")


_randomise = randomise


def _bert_layer(theirs, ours):
    """One LxmertLayer (a BERT layer) -> one of our post-norm Blocks."""
    pairs = [
        ("attention.self.query", "attn.q_proj"), ("attention.self.key", "attn.k_proj"),
        ("attention.self.value", "attn.v_proj"), ("attention.output.dense", "attn.out_proj"),
        ("attention.output.LayerNorm", "attn_norm"), ("intermediate.dense", "mlp.fc_in"),
        ("output.dense", "mlp.fc_out"), ("output.LayerNorm", "mlp_norm"),
    ]
    return {f"{ours}.{mine}.{s}": f"{theirs}.{hf}.{s}" for hf, mine in pairs for s in WB}


def _x_layer(theirs, ours):
    """One LxmertXLayer -> one CrossModalLayer with a shared cross-attention."""
    keys = {
        f"{ours}.cross_attn.{mine}.{s}": f"{theirs}.visual_attention.{hf}.{s}"
        for hf, mine in [("att.query", "q_proj"), ("att.key", "k_proj"), ("att.value", "v_proj"),
                         ("output.dense", "out_proj")]
        for s in WB
    }
    keys.update({f"{ours}.cross_norm.{s}": f"{theirs}.visual_attention.output.LayerNorm.{s}" for s in WB})
    for stream, side in (("a", "lang"), ("b", "visn")):
        pairs = [
            (f"{side}_self_att.self.query", "attn.q_proj"), (f"{side}_self_att.self.key", "attn.k_proj"),
            (f"{side}_self_att.self.value", "attn.v_proj"), (f"{side}_self_att.output.dense", "attn.out_proj"),
            (f"{side}_self_att.output.LayerNorm", "attn_norm"), (f"{side}_inter.dense", "mlp.fc_in"),
            (f"{side}_output.dense", "mlp.fc_out"), (f"{side}_output.LayerNorm", "mlp_norm"),
        ]
        keys.update({f"{ours}.block_{stream}.{mine}.{s}": f"{theirs}.{hf}.{s}" for hf, mine in pairs for s in WB})
    return keys


def _lxmert_key_map():
    """Our key -> the HF LxmertModel key, written out for the tiny config."""
    keys = {}
    for i in range(L_LAYERS):
        keys.update(_bert_layer(f"encoder.layer.{i}", f"layers_a.{i}"))
    for i in range(R_LAYERS):
        keys.update(_bert_layer(f"encoder.r_layers.{i}", f"layers_b.{i}"))
    for i in range(X_LAYERS):
        keys.update(_x_layer(f"encoder.x_layers.{i}", f"cross_layers.{i}"))
    return keys


def _stream_config(n_layers):
    return TransformerConfig(d_model=D, n_heads=HEADS, n_layers=n_layers, d_ff=FF, norm_position="post",
                             norm_eps=1e-12)


def test_equals_transformers_lxmert_encoder():
    hf_config = transformers.LxmertConfig(
        hidden_size=D, num_attention_heads=HEADS, intermediate_size=FF, l_layers=L_LAYERS,
        r_layers=R_LAYERS, x_layers=X_LAYERS, visual_feat_dim=12, visual_pos_dim=4, vocab_size=40,
        max_position_embeddings=16,
    )
    hf = _randomise(transformers.LxmertModel(hf_config))
    ours = TwoStreamEncoder(_stream_config(L_LAYERS), _stream_config(R_LAYERS), X_LAYERS).eval()
    sd = hf.state_dict()
    key_map = _lxmert_key_map()
    assert set(key_map) == set(ours.state_dict())  # the literal map covers every weight of ours
    ours.load_state_dict({mine: sd[theirs] for mine, theirs in key_map.items()}, strict=True)

    ids = torch.randint(0, 40, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    feats, pos = torch.randn(2, 5, 12), torch.rand(2, 5, 4)
    visual_mask = torch.ones(2, 5, dtype=torch.long)
    visual_mask[0, 4:] = 0
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, visual_feats=feats, visual_pos=pos,
                  visual_attention_mask=visual_mask, output_hidden_states=True)
        lang = hf.embeddings(ids, torch.zeros_like(ids))
        visn = hf.encoder.visn_fc(feats, pos)
        got = ours(lang, visn, mask.bool(), visual_mask.bool(), output_hidden_states=True)
    torch.testing.assert_close(got.a, want.language_output, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.b, want.vision_output, atol=1e-4, rtol=1e-4)
    assert len(got.hidden_states_a) == len(want.language_hidden_states) == L_LAYERS + X_LAYERS
    for mine, theirs in zip(got.hidden_states_a + got.hidden_states_b,
                            want.language_hidden_states + want.vision_hidden_states):
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)


def test_unshared_cross_attention_has_one_module_per_direction_and_the_explicit_result():
    config_a = TransformerConfig(d_model=D, n_heads=HEADS, n_layers=1, norm_position="post")
    config_b = TransformerConfig(d_model=24, n_heads=3, n_layers=1, norm_position="post")
    model = TwoStreamEncoder(config_a, config_b, 1, share_cross_attention=False).eval()
    names = {k.split(".")[2] for k in model.state_dict() if k.startswith("cross_layers.0.cross")}
    assert names == {"cross_attn_a", "cross_attn_b", "cross_norm_a", "cross_norm_b"}
    a, b = torch.randn(2, 5, D), torch.randn(2, 3, 24)
    out = model(a, b)
    # The same computation spelled out from the parts: both directions read the previous states.
    a1, b1 = model.layers_a[0](a), model.layers_b[0](b)
    layer = model.cross_layers[0]
    a2 = layer.cross_norm_a(a1 + layer.cross_attn_a(a1, b1))
    b2 = layer.cross_norm_b(b1 + layer.cross_attn_b(b1, a1))
    torch.testing.assert_close(out.a, layer.block_a(a2))
    torch.testing.assert_close(out.b, layer.block_b(b2))


def test_cross_attention_probabilities_respect_the_other_streams_padding():
    model = TwoStreamEncoder(_stream_config(1), _stream_config(1), 2).eval()
    a, b = torch.randn(2, 4, D), torch.randn(2, 6, D)
    mask_b = torch.ones(2, 6, dtype=torch.bool)
    mask_b[1, 3:] = False
    out = model(a, b, None, mask_b, output_attentions=True)
    assert len(out.cross_attentions_a) == 2 and out.cross_attentions_a[0].shape == (2, HEADS, 4, 6)
    assert torch.all(out.cross_attentions_a[1][1, ..., 3:] == 0)
    torch.testing.assert_close(out.cross_attentions_a[0].sum(-1), torch.ones(2, HEADS, 4))


def test_bad_inputs_are_named():
    with pytest.raises(ConfigError, match="share_cross_attention needs both streams of one width"):
        TwoStreamEncoder(_stream_config(1), TransformerConfig(d_model=16, n_heads=4, n_layers=1), 1)
    with pytest.raises(ConfigError, match="must not set cross_attention"):
        TwoStreamEncoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=1, cross_attention=True),
                         _stream_config(1), 1)
    model = TwoStreamEncoder(_stream_config(1), _stream_config(1), 1)
    with pytest.raises(ShapeError, match="padding_mask_b must be"):
        model(torch.randn(1, 4, D), torch.randn(1, 5, D), None, torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ShapeError, match="batch sizes differ"):
        model(torch.randn(1, 4, D), torch.randn(2, 5, D))
