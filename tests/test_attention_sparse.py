"""Pattern-based mechanisms equal the dense masked reference, forward and gradients."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polyformer import attention
from polyformer.attention import patterns as P
from polyformer.attention import reference_attention
from polyformer.errors import ConfigError

MECHANISMS = [
    ("sliding_window", dict(window=5)),
    ("sliding_window", dict(window=16)),
    ("dilated", dict(window=3, dilation=2)),
    ("random", dict(count=3, seed=2)),
    ("random", dict(count=2, unit=4, per_head=True)),
    ("block_local", dict(size=6)),
    ("global", dict(tokens=(0, 3, -1))),
    ("longformer", dict(window=6, global_tokens=(1,))),
    ("longformer", dict(window=4, dilation=(1, 2, 3))),
    ("bigbird", dict(block_size=4, window_blocks=3, global_blocks=2, random_blocks=2)),
    ("sparse", dict(pattern=P.Band(2, 0) | P.Global([0]))),
    ("sparse", dict(pattern=P.from_mask_mod(lambda b, h, q, k: (q - k) % 4 == 0))),
]


def _inputs(b, h, n, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, dtype=dtype).requires_grad_() for _ in range(3)]


def _check(mechanism, q, k, v, causal, kpm, atol):
    n_heads = q.shape[1]
    allowed = mechanism.pattern.dense(q.shape[2], n_heads)
    out = mechanism(q, k, v, causal=causal, key_padding_mask=kpm)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = reference_attention(q64, k64, v64, allowed=allowed, causal=causal, key_padding_mask=kpm)
    assert not out.isnan().any()
    torch.testing.assert_close(out.double(), ref, atol=atol, rtol=atol)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, (q, k, v), grad.to(out.dtype))
    expected = torch.autograd.grad(ref, (q64, k64, v64), grad)
    for a, e in zip(got, expected):
        assert not a.isnan().any()
        torch.testing.assert_close(a.double(), e, atol=atol, rtol=atol)


@settings(max_examples=80, deadline=None)
@given(
    mech=st.sampled_from(MECHANISMS),
    n=st.integers(1, 70),
    tile=st.sampled_from([4, 8, 16]),
    heads=st.integers(1, 3),
    batch=st.integers(1, 2),
    causal=st.booleans(),
    padding=st.sampled_from(["none", "random", "one_row_all_padded"]),
    seed=st.integers(0, 2**16),
)
def test_kernel_matches_reference_fp32(mech, n, tile, heads, batch, causal, padding, seed):
    name, options = mech
    if name in ("global", "longformer"):
        n = max(n, 4)  # their global tokens must exist
    if name == "longformer" and "dilation" in options:
        heads = 3
    attn = attention.build(name, backend="kernel", tile_size=tile, **options)
    q, k, v = _inputs(batch, heads, n, 8, torch.float32, seed)
    kpm = None
    if padding != "none":
        kpm = torch.rand(batch, n, generator=torch.Generator().manual_seed(seed)) > 0.3
        if padding == "one_row_all_padded":
            kpm[0] = False
    _check(attn, q, k, v, causal, kpm, atol=1e-5)


@pytest.mark.parametrize("name,options", MECHANISMS)
@pytest.mark.parametrize("causal", [False, True])
def test_every_mechanism_in_float64_on_a_longer_input(name, options, causal):
    heads = 3
    attn = attention.build(name, backend="kernel", tile_size=16, **options)
    q, k, v = _inputs(2, heads, 150, 8, torch.float64, 0)
    kpm = torch.ones(2, 150, dtype=torch.bool)
    kpm[1, 140:] = False
    _check(attn, q, k, v, causal, kpm, atol=1e-10)


def test_sliding_fast_path_is_used_and_exact():
    attn = attention.build("sliding_window", window=32, backend="kernel", tile_size=16)
    layout = attn.layout(256, 2, True, torch.device("cpu"))
    assert any(g.windowed for g in layout.groups)
    q, k, v = _inputs(1, 2, 256, 8, torch.float64, 1)
    _check(attn, q, k, v, True, None, atol=1e-10)


def test_kernel_dense_and_auto_backends_agree():
    q, k, v = (x.detach() for x in _inputs(1, 2, 96, 8, torch.float64, 3))
    outs = [
        attention.build("longformer", window=8, global_tokens=(0,), backend=b, tile_size=16)(q, k, v)
        for b in ("kernel", "dense", "auto")
    ]
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(outs[0], outs[2])


def test_rows_without_keys_are_zero_with_zero_gradient():
    # Global tokens only: with causality a non-global early query still sees token 0, but with
    # token 0 padded away it sees nothing at all.
    attn = attention.build("global", tokens=(0,), backend="kernel", tile_size=4)
    q, k, v = _inputs(1, 1, 12, 4, torch.float32, 0)
    kpm = torch.ones(1, 12, dtype=torch.bool)
    kpm[0, 0] = False
    out = attn(q, k, v, causal=True, key_padding_mask=kpm)
    assert torch.all(out[0, 0, 1:] == 0)
    (out.sum()).backward()
    assert not q.grad.isnan().any() and torch.all(q.grad[0, 0, 1:] == 0)


def _decodes_consistently(name, options):
    return attention.build(name, **options).consistent_decoding


@pytest.mark.parametrize("name,options", [m for m in MECHANISMS if not _decodes_consistently(*m)])
def test_length_dependent_patterns_say_so_and_really_change_with_the_length(name, options):
    # random draws and global tokens counted from the end: the first 24 positions of a length-48
    # pattern are not the length-24 pattern, so step-by-step decoding cannot reproduce a full pass
    attn = attention.build(name, **options)
    assert attn.pattern.length_dependent
    assert not torch.equal(attn.pattern.dense(48, 3)[:, :24, :24], attn.pattern.dense(24, 3))


@pytest.mark.parametrize("name,options", [m for m in MECHANISMS if _decodes_consistently(*m)])
def test_decoding_with_a_cache_equals_full_causal_attention(name, options):
    attn = attention.build(name, **options)
    q, k, v = (x.detach() for x in _inputs(1, 3, 20, 8, torch.float64, 5))
    full = attn(q, k, v, causal=True)
    torch.testing.assert_close(full, reference_attention(q, k, v, allowed=attn.pattern.dense(20, 3), causal=True))
    cache = attn.new_cache()
    steps = [attn.forward_cached(q[:, :, :7], k[:, :, :7], v[:, :, :7], cache)]
    for t in range(7, 20):
        steps.append(attn.forward_cached(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], cache))
    torch.testing.assert_close(torch.cat(steps, 2), full)


def test_cross_attention_uses_the_dense_path_and_kernel_refuses_it():
    attn = attention.build("sliding_window", window=4)
    q = torch.randn(1, 2, 5, 8)
    kv = torch.randn(1, 2, 9, 8)
    out = attn(q, kv, kv)
    ref = reference_attention(q, kv, kv, allowed=attn.dense_mask(5, 9, 2, 0, q.device))
    torch.testing.assert_close(out, ref)
    with pytest.raises(ConfigError, match="self-attention"):
        attention.build("sliding_window", window=4, backend="kernel")(q, kv, kv)


@pytest.mark.parametrize(
    "name,options,match",
    [
        ("sliding_window", dict(window=0), "window must be a positive integer"),
        ("sliding_window", dict(tile_size=0), "tile_size must be a positive integer"),
        ("longformer", dict(backend="gpu"), "backend must be one of"),
        ("global", dict(tokens=(0, 99)), "index 99 is out of range for a sequence of length 16"),
        ("sparse", dict(), "needs pattern="),
        ("bigbird", dict(window_blocks=4), "window_blocks must be odd"),
    ],
)
def test_bad_options_name_the_option(name, options, match):
    q = torch.randn(1, 2, 16, 8)
    with pytest.raises(ConfigError, match=match):
        attention.build(name, **options)(q, q, q)


def test_patterns_are_exposed_and_draw_dense_masks():
    for name in ("sliding_window", "dilated", "random", "block_local", "global", "longformer", "bigbird"):
        attn = attention.build(name)
        mask = attn.pattern.dense(64)
        assert mask.shape == (64, 64) and mask.dtype == torch.bool and mask.any()


def test_flex_backend_matches_the_kernel_and_refuses_gradients():
    q, k, v = (x.detach() for x in _inputs(1, 2, 256, 16, torch.float32, 7))
    flex = attention.build("longformer", window=32, global_tokens=(0, 5), backend="flex")
    with torch.no_grad():
        out = flex(q, k, v)
    ref = reference_attention(q, k, v, allowed=flex.pattern.dense(256))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="forward-only on CPU"):
        flex(q.requires_grad_(), k, v)


def test_query_tiles_without_any_key_are_zero_forward_and_backward():
    pattern = P.from_mask_mod(lambda b, h, q, k: (q < 8) & (k < 8))  # tiles past 8 need no key
    attn = attention.build("sparse", pattern=pattern, backend="kernel", tile_size=4)
    for _ in range(3):  # fresh buffers each time; none may carry stale values
        q, k, v = _inputs(2, 2, 40, 8, torch.float32, 11)
        out = attn(q, k, v)
        assert torch.all(out[:, :, 8:] == 0)
        out.backward(torch.randn_like(out))
        assert torch.all(q.grad[:, :, 8:] == 0) and not q.grad.isnan().any()
    _check(attn, q, k, v, False, None, atol=1e-5)
