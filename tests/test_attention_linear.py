"""``linear`` attention against a naive O(N²) loop of the same kernelized attention."""

import pytest
import torch
import torch.nn.functional as F

from polyformer import attention
from polyformer.attention.kernels.feature_maps import register_feature_map
from polyformer.errors import ConfigError, ShapeError


def naive_kernelized(phi_q, phi_k, v, *, causal, key_padding_mask, q_offset):
    """Loop over queries: Σ_j φqᵀφk_j v_j / Σ_j φqᵀφk_j over allowed j; zeros if the sum is 0."""
    b, h, n_q, _ = phi_q.shape
    n_k = phi_k.shape[2]
    out = torch.zeros(b, h, n_q, v.shape[-1], dtype=v.dtype)
    for bi in range(b):
        for hi in range(h):
            for i in range(n_q):
                keys = [
                    j for j in range(n_k)
                    if (key_padding_mask is None or key_padding_mask[bi, j])
                    and (not causal or j <= q_offset + i)
                ]
                if not keys:
                    continue
                weights = phi_k[bi, hi, keys] @ phi_q[bi, hi, i]  # (keys,)
                total = weights.sum()
                if total > 0:
                    out[bi, hi, i] = (weights[:, None] * v[bi, hi, keys]).sum(0) / total
    return out


def elu1(x):
    return F.elu(x) + 1


def _inputs(b=2, h=2, n_q=13, n_k=13, d=6, dv=5, dtype=torch.float64):
    q = torch.randn(b, h, n_q, d, dtype=dtype, requires_grad=True)
    k = torch.randn(b, h, n_k, d, dtype=dtype, requires_grad=True)
    v = torch.randn(b, h, n_k, dv, dtype=dtype, requires_grad=True)
    return q, k, v


def _padding(b, n, kind):
    if kind is None:
        return None
    mask = torch.ones(b, n, dtype=torch.bool)
    if kind == "left":
        mask[0, :4] = False  # the first causal rows of batch 0 have no key at all
    else:
        mask[0, -3:] = False
        mask[1, :] = False  # a fully padded sequence: every row is empty
    return mask


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_q,q_offset", [(13, None), (5, None), (5, 3), (5, -2)])
@pytest.mark.parametrize("padding", [None, "left", "full"])
@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_matches_naive_forward_and_gradients(causal, n_q, q_offset, padding, chunk_size):
    q, k, v = _inputs(n_q=n_q)
    kpm = _padding(2, 13, padding)
    attn = attention.build("linear", chunk_size=chunk_size)
    got = attn(q, k, v, causal=causal, key_padding_mask=kpm, q_offset=q_offset)
    offset = (13 - n_q if causal else 0) if q_offset is None else q_offset
    ref = naive_kernelized(elu1(q), elu1(k), v, causal=causal, key_padding_mask=kpm, q_offset=offset)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-10)
    grad = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        assert not a.isnan().any()
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)


@pytest.mark.parametrize("causal", [False, True])
def test_float32_within_1e5_of_float64_reference(causal):
    q, k, v = (t.detach() for t in _inputs(n_q=200, n_k=200, d=16, dv=16))
    kpm = torch.ones(2, 200, dtype=torch.bool)
    kpm[0, :17] = False
    q32, k32, v32 = (t.float().requires_grad_() for t in (q, k, v))
    got = attention.build("linear", chunk_size=16)(q32, k32, v32, causal=causal, key_padding_mask=kpm)
    q64, k64, v64 = (t.requires_grad_() for t in (q, k, v))
    ref = naive_kernelized(elu1(q64), elu1(k64), v64, causal=causal, key_padding_mask=kpm, q_offset=0)
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(ref)
    g32 = torch.autograd.grad(got, (q32, k32, v32), grad.float())
    g64 = torch.autograd.grad(ref, (q64, k64, v64), grad)
    for a, b in zip(g32, g64):
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-5)


def test_recurrent_decoding_equals_parallel_token_by_token():
    q, k, v = (t.detach() for t in _inputs(n_q=11, n_k=11))
    kpm = torch.ones(2, 11, dtype=torch.bool)
    kpm[1, :3] = False  # left padding in batch 1, as in batched generation
    attn = attention.build("linear", chunk_size=2)
    full = attn(q, k, v, causal=True, key_padding_mask=kpm)
    cache = attn.new_cache()
    steps = [attn.forward_cached(q[:, :, :4], k[:, :, :4], v[:, :, :4], cache, key_padding_mask=kpm[:, :4])]
    for t in range(4, 11):
        sl = slice(t, t + 1)
        steps.append(attn.forward_cached(q[:, :, sl], k[:, :, sl], v[:, :, sl], cache, key_padding_mask=kpm[:, : t + 1]))
        assert cache.state.shape == (2, 2, 6, 5 + 1)  # O(1) state: (B, H, F, Dv + 1) at every length
    torch.testing.assert_close(torch.cat(steps, dim=2), full, atol=1e-12, rtol=1e-10)
    assert len(cache) == 11


def test_padded_keys_contribute_nothing_to_the_state():
    q, k, v = (t.detach() for t in _inputs(n_q=6, n_k=6))
    attn = attention.build("linear")
    kpm = torch.tensor([[True, False, True, True, False, True]] * 2)
    clean, dirty = attn.new_cache(), attn.new_cache()
    k_dirty, v_dirty = k.clone(), v.clone()
    k_dirty[:, :, ~kpm[0]] = 1e3  # garbage at padded positions must not matter
    v_dirty[:, :, ~kpm[0]] = -1e3
    a = attn.forward_cached(q, k, v, clean, key_padding_mask=kpm)
    b = attn.forward_cached(q, k_dirty, v_dirty, dirty, key_padding_mask=kpm)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(clean.state, dirty.state)


def test_cache_reorder_keeps_selected_rows():
    q, k, v = (t.detach() for t in _inputs(n_q=3, n_k=3))
    attn = attention.build("linear")
    cache = attn.new_cache()
    attn.forward_cached(q, k, v, cache)
    state = cache.state.clone()
    cache.reorder(torch.tensor([1]))
    torch.testing.assert_close(cache.state, state[1:])


def test_forward_cached_rejects_a_key_value_cache_and_bad_masks():
    q, k, v = (t.detach() for t in _inputs(n_q=2, n_k=2))
    attn = attention.build("linear")
    with pytest.raises(TypeError, match="RecurrentState"):
        attn.forward_cached(q, k, v, attention.KVCache())
    with pytest.raises(ShapeError, match="cached \\+ new"):
        attn.forward_cached(q, k, v, attn.new_cache(), key_padding_mask=torch.ones(2, 5))


def test_relu_and_custom_feature_maps():
    q, k, v = (t.detach() for t in _inputs())
    for option, phi in (("relu", F.relu), (lambda x: torch.cat([F.softplus(x), x.square()], -1), None)):
        got = attention.build("linear", feature_map=option)(q, k, v, causal=True)
        phi = phi or option
        ref = naive_kernelized(phi(q), phi(k), v, causal=True, key_padding_mask=None, q_offset=0)
        torch.testing.assert_close(got, ref)


def test_registered_feature_map_by_name():
    register_feature_map("test-softplus", F.softplus)
    q, k, v = (t.detach() for t in _inputs())
    got = attention.build("linear", feature_map="test-softplus")(q, k, v)
    ref = naive_kernelized(F.softplus(q), F.softplus(k), v, causal=False, key_padding_mask=None, q_offset=0)
    torch.testing.assert_close(got, ref)


def test_feature_map_with_negative_values_is_rejected():
    with pytest.raises(ConfigError, match="feature_map.*negative"):
        attention.build("linear", feature_map=lambda x: x)  # identity: negative for x < 0
    with pytest.raises(ConfigError, match="negative"):
        register_feature_map("bad", torch.tanh)

    def sneaky(x):  # passes the probe (|x| <= 30) but not real inputs beyond it
        return torch.where(x.abs() > 40, -torch.ones_like(x), F.relu(x))

    attn = attention.build("linear", feature_map=sneaky)
    q = torch.full((1, 1, 2, 4), 50.0)
    with pytest.raises(ConfigError, match="feature_map.*negative"):
        attn(q, q, q)


def test_feature_map_sized_for_the_head_width_builds_and_is_checked_per_call():
    q, k, v = (t.detach() for t in _inputs())
    projection = torch.randn(q.shape[-1], 12, generator=torch.Generator().manual_seed(1), dtype=q.dtype)

    def projected(x):  # only takes the real head width: the build-time probe cannot call it
        return F.elu(x @ projection) + 1

    got = attention.build("linear", feature_map=projected)(q, k, v, causal=True)
    ref = naive_kernelized(projected(q), projected(k), v, causal=True, key_padding_mask=None, q_offset=0)
    torch.testing.assert_close(got, ref)
    signed = attention.build("linear", feature_map=lambda x: x @ projection)  # negative: caught at the call
    with pytest.raises(ConfigError, match="feature_map.*negative"):
        signed(q, k, v)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"feature_map": "no-such-map"}, "unknown feature_map"),
        ({"feature_map": 3}, "feature_map must be"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 2.5}, "chunk_size"),
    ],
)
def test_bad_options_name_the_option(options, match):
    with pytest.raises(ConfigError, match=match):
        attention.build("linear", **options)


def test_bfloat16_inputs_are_computed_in_float32():
    q, k, v = (t.detach().float() for t in _inputs(n_q=40, n_k=40))
    attn = attention.build("linear", chunk_size=8)
    got = attn(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True)
    assert got.dtype == torch.bfloat16
    ref = attn(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), causal=True)
    torch.testing.assert_close(got.float(), ref, atol=2e-2, rtol=2e-2)


def test_scale_is_accepted_and_ignored():
    q, k, v = (t.detach() for t in _inputs())
    attn = attention.build("linear")
    torch.testing.assert_close(attn(q, k, v, scale=0.01), attn(q, k, v))


def test_registered():
    assert {"linear", "performer", "lsh"} <= set(attention.list())


@pytest.mark.parametrize("causal", [False, True])
def test_default_options_work_at_short_lengths_forward_and_backward(causal):
    q, k, v = (torch.randn(2, 4, 100, 16, requires_grad=True) for _ in range(3))
    kpm = torch.ones(2, 100, dtype=torch.bool)
    kpm[1, :30] = False
    out = attention.build("linear")(q, k, v, causal=causal, key_padding_mask=kpm)
    out.square().sum().backward()
    assert out.shape == (2, 4, 100, 16) and torch.isfinite(out).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_streamed_non_causal_blocks_match_naive(monkeypatch):
    import polyformer.attention.kernels.linearized as linearized

    monkeypatch.setattr(linearized, "_STREAM_BLOCK_ELEMENTS", 2 * 2 * 6 * 3)  # 3 positions per block
    q, k, v = _inputs(n_q=10, n_k=13)
    kpm = _padding(2, 13, "full")
    got = attention.build("linear")(q, k, v, key_padding_mask=kpm)
    ref = naive_kernelized(elu1(q), elu1(k), v, causal=False, key_padding_mask=kpm, q_offset=0)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-10)
    with torch.no_grad():  # the in-place path used without autograd
        torch.testing.assert_close(attention.build("linear")(q, k, v, key_padding_mask=kpm), ref.detach())
    grad = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)


@pytest.mark.parametrize("causal", [False, True])
def test_kernel_with_initial_state_equals_attending_to_the_prefix(causal):
    from polyformer.attention.kernels.kernelized import append_ones, kernelized_attention, key_state

    q, k, v = (t.detach() for t in _inputs(n_q=9, n_k=9))
    phi_q, phi_k = elu1(q), elu1(k)
    prefix = key_state(phi_k[:, :, :4], append_ones(v[:, :, :4]))
    got, state = kernelized_attention(
        phi_q[:, :, 4:], phi_k[:, :, 4:], v[:, :, 4:], causal=causal, chunk_size=2,
        initial_state=prefix, return_state=True,
    )
    ref = naive_kernelized(phi_q, phi_k, v, causal=causal, key_padding_mask=None, q_offset=0)[:, :, 4:]
    if not causal:
        ref = naive_kernelized(phi_q[:, :, 4:], phi_k, v, causal=False, key_padding_mask=None, q_offset=0)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(state, key_state(phi_k, append_ones(v)))
