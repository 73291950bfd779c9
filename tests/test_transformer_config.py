"""TransformerConfig: JSON round trip, defaults, per-layer attention, and clear errors."""

import json

import pytest

from polyformer.attention import AttentionSpec
from polyformer.errors import ConfigError
from polyformer.layers import RotaryOptions
from polyformer.transformer import TransformerConfig


def test_round_trip_through_json_keeps_every_field():
    config = TransformerConfig(
        d_model=48, n_heads=4, n_layers=3, d_ff=100, norm="rmsnorm", norm_eps=1e-6,
        norm_position="pre", activation="silu", mlp="gated", qkv_bias=False, out_bias=False,
        mlp_bias=False, attention="dense", layer_attention=[None, "dense", None],
        attention_scale=1.0, rotary={"dim": 6, "base": 500.0, "interleaved": True}, dropout=0.1,
        cross_attention=True, cross_attention_first=True, cross_attention_dim=20, final_norm=False,
    )
    data = json.loads(json.dumps(config.to_dict()))
    again = TransformerConfig.from_dict(data)
    assert again == config
    assert again.to_dict() == data
    assert again.rotary == RotaryOptions(dim=6, base=500.0, interleaved=True)
    assert again.layer_attention == {1: AttentionSpec("dense")}
    assert again.cross_attention == AttentionSpec("dense")


def test_defaults_derive_sizes_and_final_norm():
    pre = TransformerConfig(d_model=32, n_heads=4, n_layers=2)
    assert (pre.attention_head_dim, pre.ff_dim, pre.uses_final_norm) == (8, 128, True)
    post = TransformerConfig(d_model=32, n_heads=4, n_layers=2, norm_position="post")
    assert not post.uses_final_norm
    wide = TransformerConfig(d_model=30, n_heads=4, n_layers=1, head_dim=16)
    assert wide.attention_head_dim == 16


def test_layer_attention_accepts_mappings_with_string_keys_and_falls_back_to_default():
    config = TransformerConfig(
        d_model=8, n_heads=2, n_layers=3, layer_attention={"2": {"name": "dense", "options": {}}}
    )
    assert config.attention_for(0) == config.attention
    assert config.attention_for(2) == AttentionSpec("dense")


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"d_model": 100, "n_heads": 3}, r"d_model \(100\) is not divisible by n_heads \(3\).*head_dim"),
        ({"n_layers": 0}, "n_layers must be a positive integer"),
        ({"d_ff": 2.5}, "d_ff must be a positive integer"),
        ({"norm": "batchnorm"}, "norm must be one of layernorm, rmsnorm"),
        ({"norm_eps": 0}, "norm_eps must be a positive number"),
        ({"norm_position": "sandwich"}, "norm_position must be 'pre'"),
        ({"activation": "gelu2"}, "activation must be one of"),
        ({"mlp": "moe"}, "mlp must be one of mlp, gated"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"attention_scale": -1.0}, "attention_scale must be a positive number"),
        ({"attention": "no-such"}, "unknown attention mechanism 'no-such'; known mechanisms"),
        ({"attention": {"name": "dense", "options": {"window": 3}}}, "unknown option"),
        ({"layer_attention": {5: "dense"}}, "layer_attention names layer 5, but layers are 0..1"),
        ({"layer_attention": ["dense"]}, "one entry per layer"),
        ({"layer_attention": {"x": "dense"}}, "keys must be layer numbers"),
        ({"rotary": {"dim": 10}}, r"rotary.dim \(10\) exceeds the head dim \(8\)"),
        ({"rotary": {"dims": 4}}, "rotary: unknown option"),
        ({"rotary": {"dim": 3}}, "positive even"),
        ({"parallel_residual": True, "norm_position": "post"}, "parallel_residual needs norm_position='pre'"),
        ({"parallel_residual": True, "cross_attention": True}, "cannot be combined with cross_attention"),
        ({"cross_attention_first": True}, "needs cross_attention"),
        ({"qkv_bias": "yes"}, "qkv_bias must be true or false"),
    ],
)
def test_bad_configs_name_the_field_and_the_fix(fields, match):
    base = {"d_model": 16, "n_heads": 2, "n_layers": 2}
    with pytest.raises(ConfigError, match=match):
        TransformerConfig(**{**base, **fields})


def test_from_dict_rejects_unknown_and_missing_fields():
    with pytest.raises(ConfigError, match=r"unknown transformer config field\(s\) \['hidden_size'\]"):
        TransformerConfig.from_dict({"d_model": 8, "n_heads": 2, "n_layers": 1, "hidden_size": 8})
    with pytest.raises(ConfigError, match="missing required field"):
        TransformerConfig.from_dict({"d_model": 8})
