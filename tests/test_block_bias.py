"""Additive biases and score functions from the model to the mechanism, checked against the explicit reference."""

import pytest
import torch

from polyformer import attention
from polyformer.attention import reference_attention
from polyformer.attention.score_mods import ALiBi, alibi_slopes
from polyformer.errors import ConfigError, ShapeError
from polyformer.layers import MultiHeadAttention
from polyformer.transformer import Decoder, Encoder, TransformerConfig

from _transformer_reference import linear, mlp, norm

D, HEADS, N, LAYERS = 16, 2, 6, 3
ATOL = 1e-5


def _attention(module, x, *, bias=None, score_mod=None, causal=False, mask=None):
    """out_proj(softmax(q kᵀ · scale + bias) v) written out from the weights."""

    def heads(t):
        return t.view(t.shape[0], t.shape[1], HEADS, -1).transpose(1, 2)

    q, k, v = (heads(linear(p, x)) for p in (module.q_proj, module.k_proj, module.v_proj))
    out = reference_attention(q, k, v, causal=causal, key_padding_mask=mask, bias=bias,
                              score_mod=score_mod, scale=module.scale)
    return linear(module.out_proj, out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


def _reference_stack(stack, config, x, biases, *, score_mod=None, causal=False, mask=None):
    """Pre-norm blocks, each with its own bias, then the final norm."""
    for layer, bias in zip(stack.layers, biases):
        x = x + _attention(layer.attn, norm(layer.attn_norm, x), bias=bias, score_mod=score_mod,
                           causal=causal, mask=mask)
        x = x + mlp(layer.mlp, norm(layer.mlp_norm, x), config.activation)
    return norm(stack.final_norm, x)


@pytest.mark.parametrize("mechanism", ["dense", "memory_efficient"])
@pytest.mark.parametrize("form", ["shared", "per_layer", "callable"])
def test_attention_bias_forms_equal_the_explicit_reference(mechanism, form):
    config = TransformerConfig(d_model=D, n_heads=HEADS, n_layers=LAYERS, attention=mechanism)
    encoder = Encoder(config).eval()
    x = torch.randn(2, N, D)
    mask = torch.ones(2, N, dtype=torch.bool)
    mask[1, -2:] = False
    tables = [torch.randn(1, HEADS, N, N) for _ in range(LAYERS)]  # e.g. a 2-D spatial bias per layer
    if form == "shared":
        given, biases = tables[0], [tables[0]] * LAYERS
    elif form == "per_layer":
        given, biases = [tables[0], None, tables[2]], [tables[0], None, tables[2]]
    else:
        given, biases = (lambda i: tables[i] if i != 1 else None), [tables[0], None, tables[2]]
    got = encoder(x, key_padding_mask=mask, attention_bias=given)
    want = _reference_stack(encoder, config, x, biases, mask=mask)
    real = mask[..., None]
    torch.testing.assert_close(got * real, want * real, atol=ATOL, rtol=ATOL)
    # The bias matters: without it the output differs.
    assert not torch.allclose(encoder(x, key_padding_mask=mask), got, atol=1e-3)


def test_per_layer_bias_list_of_the_wrong_length_is_named():
    encoder = Encoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=LAYERS))
    with pytest.raises(ShapeError, match=r"one entry per layer \(3\), got 2"):
        encoder(torch.randn(1, N, D), attention_bias=[None, None])


def test_bias_on_a_mechanism_without_bias_support_names_those_with():
    encoder = Encoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=1, attention="linear"))
    with pytest.raises(ShapeError, match="does not accept an additive bias.*dense.*memory_efficient"):
        encoder(torch.randn(1, N, D), attention_bias=torch.zeros(1, 1, N, N))


def test_decoder_bias_while_decoding_equals_the_full_pass():
    config = TransformerConfig(d_model=D, n_heads=HEADS, n_layers=2)
    decoder = Decoder(config).eval()
    x = torch.randn(1, N, D)
    bias = torch.randn(1, HEADS, N, N)
    full = decoder(x, attention_bias=bias)
    caches = decoder.new_caches()
    first = decoder(x[:, :4], caches=caches, attention_bias=bias[:, :, :4, :4])
    rest = decoder(x[:, 4:], caches=caches, attention_bias=bias[:, :, 4:, :])
    torch.testing.assert_close(torch.cat([first, rest], 1), full, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("mechanism", ["dense", "memory_efficient"])
def test_score_mod_per_call_equals_the_reference(mechanism):
    config = TransformerConfig(d_model=D, n_heads=HEADS, n_layers=2, attention=mechanism)
    decoder = Decoder(config).eval()
    x = torch.randn(2, N, D)
    alibi = ALiBi(alibi_slopes(HEADS).float())

    def soft_cap(score, b, h, q_idx, kv_idx):  # not additive: exercises the general path
        return 5.0 * torch.tanh(score / 5.0)

    for score_mod in (alibi, soft_cap):
        got = decoder(x, score_mod=score_mod)
        want = _reference_stack(decoder, config, x, [None, None], score_mod=score_mod, causal=True)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL)


def test_score_mod_equals_the_bias_it_stands_for():
    layer = MultiHeadAttention(D, HEADS).eval()
    x = torch.randn(1, N, D)
    slopes = alibi_slopes(HEADS).float()
    distance = (torch.arange(N)[None, :] - torch.arange(N)[:, None]).float()
    table = slopes[:, None, None] * distance  # (H, N, N)
    torch.testing.assert_close(
        layer(x, causal=True, score_mod=ALiBi(slopes)), layer(x, causal=True, attention_bias=table),
        atol=ATOL, rtol=ATOL,
    )


def test_memory_efficient_chains_its_own_score_mod_with_the_call():
    q, k, v = torch.randn(3, 1, 2, N, 8).unbind(0)
    mech = attention.build("memory_efficient", score_mod="alibi")
    double = lambda s, b, h, qi, ki: 2 * s  # noqa: E731
    alibi = ALiBi(alibi_slopes(2))
    want = reference_attention(q, k, v, causal=True, score_mod=lambda s, *i: double(alibi(s, *i), *i))
    torch.testing.assert_close(mech(q, k, v, causal=True, score_mod=double), want, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("name", ["sliding_window", "linear", "lsh"])
def test_score_mod_on_a_mechanism_without_support_names_those_with(name):
    options = {"window": 2} if name == "sliding_window" else {"bucket_size": 4} if name == "lsh" else {}
    mech = attention.build(name, **options)
    q = torch.randn(1, 2, 8, 8)
    with pytest.raises(ConfigError, match=r"does not take a score function.*use one of dense, memory_efficient"):
        mech(q, q, q, score_mod=lambda s, b, h, qi, ki: s)
