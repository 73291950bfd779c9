"""Multi-head self- and cross-attention layers against an explicit projection + reference softmax."""

import pytest
import torch

from polyformer.attention import reference_attention
from polyformer.errors import ShapeError
from polyformer.layers import (
    CrossAttention,
    CrossAttentionCache,
    MultiHeadAttention,
    RotaryEmbedding,
    RotaryOptions,
)


def _heads(x, h):
    b, n, _ = x.shape
    return x.view(b, n, h, -1).transpose(1, 2)


def _merge(x):
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _linear(layer, x):
    out = x @ layer.weight.T
    return out if layer.bias is None else out + layer.bias


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("scale", [None, 1.0])
def test_self_attention_matches_explicit_computation(causal, scale):
    attn = MultiHeadAttention(12, 3, qkv_bias=False, out_bias=True, scale=scale).double()
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    kpm = torch.ones(2, 7, dtype=torch.bool)
    kpm[1, 5:] = False
    q, k, v = (_heads(_linear(p, x), 3) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    ref = reference_attention(q, k, v, causal=causal, key_padding_mask=kpm, scale=scale)
    expected = _linear(attn.out_proj, _merge(ref))
    torch.testing.assert_close(attn(x, causal=causal, key_padding_mask=kpm), expected)
    assert attn.q_proj.bias is None and attn.out_proj.bias is not None


def test_head_dim_can_differ_from_d_model_over_heads():
    attn = MultiHeadAttention(10, 2, head_dim=8).double()
    assert attn.q_proj.weight.shape == (16, 10) and attn.out_proj.weight.shape == (10, 16)
    x = torch.randn(1, 4, 10, dtype=torch.float64)
    q, k, v = (_heads(_linear(p, x), 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    torch.testing.assert_close(attn(x), _linear(attn.out_proj, _merge(reference_attention(q, k, v))))


def test_self_attention_rotates_queries_and_keys_but_not_values():
    attn = MultiHeadAttention(8, 2).double()
    rope = RotaryEmbedding(4, RotaryOptions(dim=2, interleaved=True))
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    angles = rope(torch.arange(5), torch.float64)
    q, k, v = (_heads(_linear(p, x), 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    ref = reference_attention(angles.apply(q), angles.apply(k), v, causal=True)
    torch.testing.assert_close(attn(x, causal=True, rotary=angles), _linear(attn.out_proj, _merge(ref)))


def test_cached_self_attention_needs_causal():
    attn = MultiHeadAttention(8, 2)
    with pytest.raises(ShapeError, match="needs causal attention"):
        attn(torch.randn(1, 2, 8), cache=attn.mechanism.new_cache())


def test_cross_attention_matches_explicit_computation_and_caches_keys_once():
    attn = CrossAttention(8, 2, kv_dim=6).double()
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    context = torch.randn(2, 5, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    q = _heads(_linear(attn.q_proj, x), 2)
    k, v = (_heads(_linear(p, context), 2) for p in (attn.k_proj, attn.v_proj))
    expected = _linear(attn.out_proj, _merge(reference_attention(q, k, v, key_padding_mask=mask)))
    torch.testing.assert_close(attn(x, context, context_padding_mask=mask), expected)

    cache = CrossAttentionCache()
    first = attn(x[:, :1], context, context_padding_mask=mask, cache=cache)
    assert cache.filled and len(cache) == 5
    later = attn(x[:, 1:], None, cache=cache)  # keys, values and mask come from the cache
    torch.testing.assert_close(torch.cat([first, later], dim=1), expected)


def test_cross_attention_without_context_says_what_to_pass():
    with pytest.raises(ShapeError, match="pass encoder_states"):
        CrossAttention(8, 2)(torch.randn(1, 2, 8), None)
