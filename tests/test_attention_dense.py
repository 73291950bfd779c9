import pytest
import torch

from polyformer import attention
from polyformer.attention import reference_attention
from polyformer.errors import ConfigError, ShapeError


def _qkv(b=2, h=3, nq=7, nk=7, d=8, dtype=torch.float64):
    return [torch.randn(b, h, n, d, dtype=dtype, requires_grad=True) for n in (nq, nk, nk)]


def _naive(q, k, v, allowed):
    """Loop over rows: softmax over the allowed keys only; zeros for a row with none."""
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            for i in range(q.shape[2]):
                keys = allowed[b, h, i].nonzero().flatten()
                if len(keys):
                    s = (q[b, h, i] @ k[b, h, keys].T) / q.shape[-1] ** 0.5
                    out[b, h, i] = torch.softmax(s, 0) @ v[b, h, keys]
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("nq,nk", [(7, 7), (3, 7), (1, 5)])
def test_reference_matches_naive_loop(causal, nq, nk):
    q, k, v = _qkv(nq=nq, nk=nk)
    kpm = torch.rand(2, nk) > 0.3
    kpm[1] = False  # a whole batch row of padding: every query row is empty
    allowed = kpm[:, None, None, :].expand(2, 3, nq, nk).clone()
    if causal:
        allowed &= torch.arange(nk)[None, :] <= torch.arange(nq)[:, None] + (nk - nq)
    expected = _naive(q, k, v, allowed)
    got = reference_attention(q, k, v, causal=causal, key_padding_mask=kpm)
    torch.testing.assert_close(got, expected)
    assert torch.all(got[1] == 0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("nq,nk", [(9, 9), (4, 9), (1, 9)])
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_dense_matches_reference_forward_and_backward(causal, nq, nk, padding, with_bias):
    q, k, v = _qkv(nq=nq, nk=nk)
    kpm = None
    if padding:
        kpm = torch.ones(2, nk, dtype=torch.bool)
        kpm[0, :3] = False  # left padding: early causal rows of batch 0 have no key at all
    bias = torch.randn(1, 3, nq, nk, dtype=q.dtype) if with_bias else None
    got = attention.build("dense")(q, k, v, causal=causal, key_padding_mask=kpm, bias=bias)
    ref = reference_attention(q, k, v, causal=causal, key_padding_mask=kpm, bias=bias)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-8)
    grad = torch.randn_like(got)
    g_got = torch.autograd.grad(got, (q, k, v), grad)
    g_ref = torch.autograd.grad(ref, (q, k, v), grad)
    for a, b in zip(g_got, g_ref):
        assert not a.isnan().any()
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_integer_padding_mask_is_accepted_as_hugging_face_attention_mask():
    q, k, v = _qkv()
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1] * 7])
    got = attention.build("dense")(q, k, v, key_padding_mask=mask)
    torch.testing.assert_close(got, reference_attention(q, k, v, key_padding_mask=mask.bool()))


def test_unknown_mechanism_lists_known_ones():
    with pytest.raises(ConfigError, match="known mechanisms: .*dense"):
        attention.build("no-such-attention")


def test_unknown_option_lists_valid_options():
    with pytest.raises(ConfigError, match="unknown option"):
        attention.build("dense", window=3)


@pytest.mark.parametrize(
    "shapes,match",
    [
        (((2, 3, 4), (2, 3, 4, 8), (2, 3, 4, 8)), "4 dimensions"),
        (((2, 3, 4, 8), (2, 2, 4, 8), (2, 2, 4, 8)), "batch and heads"),
        (((2, 3, 4, 8), (2, 3, 4, 6), (2, 3, 4, 8)), "head_dim"),
        (((2, 3, 4, 8), (2, 3, 4, 8), (2, 3, 5, 8)), "length"),
    ],
)
def test_bad_shapes_name_the_problem(shapes, match):
    q, k, v = (torch.randn(*s) for s in shapes)
    with pytest.raises(ShapeError, match=match):
        attention.build("dense")(q, k, v)


def test_bad_dtype_and_padding_shape():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ShapeError, match="floating-point"):
        attention.build("dense")(q.long(), q.long(), q.long())
    with pytest.raises(ShapeError, match="key_padding_mask must have shape"):
        attention.build("dense")(q, q, q, key_padding_mask=torch.ones(1, 5))


def test_kv_cache_decoding_equals_full_causal_attention():
    q, k, v = (t.detach() for t in _qkv(nq=10, nk=10))
    attn = attention.build("dense")
    full = attn(q, k, v, causal=True)
    cache = attn.new_cache()
    steps = [attn.forward_cached(q[:, :, :4], k[:, :, :4], v[:, :, :4], cache)]
    for t in range(4, 10):
        steps.append(attn.forward_cached(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], cache))
    torch.testing.assert_close(torch.cat(steps, dim=2), full)
    assert len(cache) == 10


def test_spec_round_trip():
    spec = attention.AttentionSpec.coerce({"name": "dense", "options": {}})
    assert attention.AttentionSpec.of(spec.build()) == spec
    assert attention.AttentionSpec.coerce("dense") == spec
