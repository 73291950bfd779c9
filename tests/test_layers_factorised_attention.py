"""Factorised (divided) attention against a naive loop over the other axis with the plain MultiHeadAttention."""

import pytest
import torch

from polyformer.errors import ConfigError, ShapeError
from polyformer.layers import FactorisedAttention, MultiHeadAttention

B, T, S, D, HEADS = 2, 3, 5, 16, 2


def _pair(axis, **kwargs):
    torch.manual_seed(0)
    layer = FactorisedAttention(D, HEADS, axis=axis, **kwargs).eval()
    plain = MultiHeadAttention(D, HEADS, **kwargs).eval()
    plain.load_state_dict(layer.state_dict())
    return layer, plain


def test_time_axis_equals_a_loop_over_positions():
    layer, plain = _pair("time")
    x = torch.randn(B, T, S, D)
    got, cls_out = layer(x, torch.randn(B, 1, D))
    want = torch.stack([plain(x[:, :, s]) for s in range(S)], dim=2)  # each position over the frames
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert cls_out is None


def test_space_axis_equals_a_loop_over_frames():
    layer, plain = _pair("space")
    x = torch.randn(B, T, S, D)
    got, _ = layer(x)
    want = torch.stack([plain(x[:, t]) for t in range(T)], dim=1)  # each frame over its patches
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_space_axis_with_a_class_token_averages_it_over_frames():
    layer, plain = _pair("space", qkv_bias=False)
    x, cls = torch.randn(B, T, S, D), torch.randn(B, 1, D)
    got, cls_out = layer(x, cls)
    patches, cls_sum = [], torch.zeros(B, D)
    for t in range(T):
        out = plain(torch.cat([cls, x[:, t]], dim=1))  # the class token joins every frame
        cls_sum += out[:, 0]
        patches.append(out[:, 1:])
    torch.testing.assert_close(got, torch.stack(patches, dim=1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cls_out, (cls_sum / T)[:, None], atol=1e-5, rtol=1e-5)


def test_any_mechanism_runs_along_the_axis():
    layer, plain = _pair("time", attention="memory_efficient")
    x = torch.randn(B, T, S, D)
    want = torch.stack([plain(x[:, :, s]) for s in range(S)], dim=2)
    torch.testing.assert_close(layer(x)[0], want, atol=1e-5, rtol=1e-5)


def test_bad_inputs_are_named():
    with pytest.raises(ConfigError, match="axis must be one of time, space"):
        FactorisedAttention(D, HEADS, axis="depth")
    layer = FactorisedAttention(D, HEADS, axis="space")
    with pytest.raises(ShapeError, match=r"\(batch, time, space, d_model\)"):
        layer(torch.randn(B, S, D))
    with pytest.raises(ShapeError, match="class token must be"):
        layer(torch.randn(B, T, S, D), torch.randn(B, D))
