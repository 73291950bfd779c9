"""Blocks are configured, never mutated: per-layer score scales and a layer builder (``block_fn``)."""

import math

import pytest
import torch
from torch import nn

from polyformer.errors import ConfigError
from polyformer.transformer import Block, Decoder, Encoder, TransformerConfig

from _transformer_reference import block as reference_block

D, HEADS = 16, 2


def test_per_layer_attention_scale_reaches_each_layer_and_matches_the_reference():
    scales = [1 / math.sqrt(8) / (i + 1) for i in range(3)]  # GPT-2's scale_attn_by_inverse_layer_idx
    config = TransformerConfig(d_model=D, n_heads=HEADS, n_layers=3, attention_scale=scales)
    decoder = Decoder(config).eval()
    assert [layer.attn.scale for layer in decoder.layers] == scales
    x = torch.randn(2, 5, D)
    want = x
    for layer in decoder.layers:
        want = reference_block(layer, config, want, causal=True)  # reads each layer's own scale
    torch.testing.assert_close(decoder(x), decoder.final_norm(want), atol=1e-5, rtol=1e-5)
    # The scales matter: one shared scale gives another output.
    shared = Decoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=3)).eval()
    shared.load_state_dict(decoder.state_dict())
    assert not torch.allclose(shared(x), decoder(x), atol=1e-4)


def test_per_layer_scale_round_trips_through_json():
    config = TransformerConfig(d_model=D, n_heads=HEADS, n_layers=2, attention_scale=(0.5, 0.25))
    assert config.attention_scale == [0.5, 0.25]
    again = TransformerConfig.from_dict(config.to_dict())
    assert again == config and again.attention_scale_for(1) == 0.25


@pytest.mark.parametrize(
    "scale, message",
    [
        ([0.5], r"one positive number per layer \(2\), or null .*; got a list of 1"),
        ([0.5, 0.0], "layer 1 has 0.0"),
        ([0.5, "x"], "layer 1 has 'x'"),
        (-1.0, "attention_scale must be a positive number"),
    ],
)
def test_bad_attention_scales_are_named(scale, message):
    with pytest.raises(ConfigError, match=message):
        TransformerConfig(d_model=D, n_heads=HEADS, n_layers=2, attention_scale=scale)


class _ScaledResidual(nn.Module):
    """A layer of another shape: x + w · tanh(x), with w = layer_index + 1."""

    def __init__(self, config, layer_index):
        super().__init__()
        self.weight = nn.Parameter(torch.full((config.d_model,), float(layer_index + 1)))
        self.calls = []

    def forward(self, x, *, causal, key_padding_mask, rotary, cache, encoder_states,
                encoder_padding_mask, attention_bias, score_mod, output_attentions):
        self.calls.append(dict(causal=causal, attention_bias=attention_bias))
        return x + self.weight * torch.tanh(x)


@pytest.mark.parametrize("stack, causal", [(Encoder, False), (Decoder, True)])
def test_block_fn_builds_each_layer_with_its_index(stack, causal):
    config = TransformerConfig(d_model=D, n_heads=HEADS, n_layers=3, final_norm=False)
    model = stack(config, block_fn=_ScaledResidual)
    assert [layer.weight[0].item() for layer in model.layers] == [1.0, 2.0, 3.0]
    x = torch.randn(1, 4, D)
    bias = [torch.zeros(1), None, torch.ones(1)]
    out = model.run(x, attention_bias=bias, output_hidden_states=True)
    want = x
    for w in (1.0, 2.0, 3.0):
        want = want + w * torch.tanh(want)
    torch.testing.assert_close(out.last_hidden_state, want)
    assert [call["causal"] for layer in model.layers for call in layer.calls] == [causal] * 3
    assert [layer.calls[0]["attention_bias"] for layer in model.layers] == bias
    assert len(out.hidden_states) == 4


def test_default_block_fn_is_block():
    encoder = Encoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=2))
    assert all(type(layer) is Block for layer in encoder.layers)
