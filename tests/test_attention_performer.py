"""``performer`` (FAVOR+) against a naive O(N²) reference of the same random-feature attention."""

import math

import pytest
import torch

from polyformer import attention
from polyformer.attention import reference_attention
from polyformer.attention.performer import default_num_features, draw_projection
from polyformer.errors import ConfigError, ShapeError

from test_attention_linear import naive_kernelized


def favor_features(x, projection, scale):
    """φ(x) = exp(W x√s − s|x|²/2) / √m, without any stabiliser (float64 keeps it finite here)."""
    w = projection.to(x.dtype)
    xs = x * math.sqrt(scale)
    return torch.exp(xs @ w.T - 0.5 * xs.square().sum(-1, keepdim=True)) / math.sqrt(w.shape[0])


def _inputs(b=2, h=2, n_q=12, n_k=12, d=8, dv=5, dtype=torch.float64, spread=1.0):
    q = (spread * torch.randn(b, h, n_q, d, dtype=dtype)).requires_grad_()
    k = (spread * torch.randn(b, h, n_k, d, dtype=dtype)).requires_grad_()
    v = torch.randn(b, h, n_k, dv, dtype=dtype, requires_grad=True)
    return q, k, v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_q,q_offset", [(12, None), (4, None), (4, -1)])
@pytest.mark.parametrize("padded", [False, True])
def test_matches_naive_reference_forward_and_gradients(causal, n_q, q_offset, padded):
    q, k, v = _inputs(n_q=n_q)
    kpm = None
    if padded:
        kpm = torch.ones(2, 12, dtype=torch.bool)
        kpm[0, :5] = False
        kpm[1, -2:] = False
    attn = attention.build("performer", num_features=24, chunk_size=5)
    scale = 0.3
    got = attn(q, k, v, causal=causal, key_padding_mask=kpm, q_offset=q_offset, scale=scale)
    offset = (12 - n_q if causal else 0) if q_offset is None else q_offset
    w = attn.projection
    ref = naive_kernelized(
        favor_features(q, w, scale), favor_features(k, w, scale), v,
        causal=causal, key_padding_mask=kpm, q_offset=offset,
    )
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-10)
    grad = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        assert not a.isnan().any()
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)


@pytest.mark.parametrize("causal,padded", [(False, False), (True, False), (False, True), (True, True)])
def test_float32_within_1e5_of_float64_reference(causal, padded):
    q, k, v = (t.detach() for t in _inputs(n_q=150, n_k=150, d=16, dv=16, spread=0.7))
    mask = None
    if padded:  # the second sequence ends 37 keys early
        mask = torch.ones(q.shape[0], 150, dtype=torch.bool)
        mask[-1, 113:] = False
    attn = attention.build("performer", num_features=64, chunk_size=32)
    q32, k32, v32 = (t.float().requires_grad_() for t in (q, k, v))
    got = attn(q32, k32, v32, causal=causal, key_padding_mask=mask)
    q64, k64, v64 = (t.requires_grad_() for t in (q, k, v))
    w = attn.projection
    scale = 1 / 4
    ref = naive_kernelized(
        favor_features(q64, w, scale), favor_features(k64, w, scale), v64,
        causal=causal, key_padding_mask=mask, q_offset=0,
    )
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(ref)
    g32 = torch.autograd.grad(got, (q32, k32, v32), grad.float())
    g64 = torch.autograd.grad(ref, (q64, k64, v64), grad)
    for a, b in zip(g32, g64):
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-5)


def test_large_inputs_stay_finite_thanks_to_the_stabilisers():
    # Logits up to ~±400: exp overflows float32 without the stabilisers.
    q, k, v = (t.detach().float() for t in _inputs(n_q=40, n_k=40, d=16, spread=6.0))
    attn = attention.build("performer", num_features=32)
    for causal in (False, True):
        got = attn(q, k, v, causal=causal)
        assert torch.isfinite(got).all()
        ref = naive_kernelized(
            favor_features(q.double(), attn.projection, 0.25), favor_features(k.double(), attn.projection, 0.25),
            v.double(), causal=causal, key_padding_mask=None, q_offset=0,
        )
        rows = torch.isfinite(ref).all(-1) & (ref.abs().sum(-1) > 0)  # rows float64 can represent
        torch.testing.assert_close(got.double()[rows], ref[rows], atol=1e-4, rtol=1e-4)


def test_approximation_error_falls_as_features_grow():
    torch.manual_seed(1)
    q, k, v = (t.detach() for t in _inputs(b=1, h=4, n_q=64, n_k=64, d=16, dv=8, spread=0.5))
    exact = reference_attention(q, k, v)
    errors = []
    for m in (4, 16, 64, 256, 1024):
        trials = [
            (attention.build("performer", num_features=m, seed=seed)(q, k, v) - exact).pow(2).mean().sqrt()
            for seed in range(6)
        ]
        errors.append(torch.stack(trials).mean().item())
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < errors[0] / 4, errors


def test_default_num_features_follows_head_dim():
    assert default_num_features(64) == 266
    q, k, v = (t.detach() for t in _inputs(d=8))
    attn = attention.build("performer")
    attn(q, k, v)
    assert attn.projection.shape == (default_num_features(8), 8)


def test_orthogonal_projection_rows_are_orthogonal_within_blocks():
    w = draw_projection(20, 8, torch.Generator().manual_seed(0))
    block = w[:8] / w[:8].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(8), atol=1e-5, rtol=0)
    assert w.shape == (20, 8)


def test_features_are_reproducible_and_redraw_on_demand():
    q, k, v = (t.detach() for t in _inputs())
    a = attention.build("performer", seed=3)
    b = attention.build("performer", seed=3)
    torch.testing.assert_close(a(q, k, v), b(q, k, v))
    before = a.projection.clone()
    a.redraw_features()
    assert not torch.equal(before, a.projection)
    b.redraw_features()
    torch.testing.assert_close(a.projection, b.projection)  # redraws are seeded too


def test_redraw_schedule_applies_in_training_only():
    q, k, v = (t.detach() for t in _inputs())
    attn = attention.build("performer", redraw_interval=2)
    attn(q, k, v)
    first = attn.projection.clone()
    attn(q, k, v)
    assert torch.equal(first, attn.projection)  # call 2: no redraw yet
    attn(q, k, v)
    assert not torch.equal(first, attn.projection)  # call 3: redrawn after 2 calls
    third = attn.projection.clone()
    attn.eval()
    for _ in range(4):
        attn(q, k, v)
    assert torch.equal(third, attn.projection)  # never in eval mode


def test_state_dict_round_trip_restores_features():
    q, k, v = (t.detach() for t in _inputs())
    trained = attention.build("performer", seed=None)
    trained.redraw_features(8)
    out = trained(q, k, v)
    fresh = attention.build("performer", seed=None)
    fresh.load_state_dict(trained.state_dict())
    torch.testing.assert_close(fresh(q, k, v), out)
    assert fresh.draw_index == trained.draw_index


def test_recurrent_decoding_equals_parallel_while_the_stabiliser_grows():
    q, k, v = (t.detach() for t in _inputs(n_q=10, n_k=10))
    k = k * torch.linspace(0.2, 3.0, 10)[:, None]  # later keys have larger logits
    kpm = torch.ones(2, 10, dtype=torch.bool)
    kpm[0, :2] = False
    attn = attention.build("performer", num_features=16, chunk_size=3)
    full = attn(q, k, v, causal=True, key_padding_mask=kpm)
    cache = attn.new_cache()
    outs = [attn.forward_cached(q[:, :, :3], k[:, :, :3], v[:, :, :3], cache, key_padding_mask=kpm[:, :3])]
    scales = []
    for t in range(3, 10):
        sl = slice(t, t + 1)
        outs.append(attn.forward_cached(q[:, :, sl], k[:, :, sl], v[:, :, sl], cache, key_padding_mask=kpm[:, : t + 1]))
        scales.append(cache.log_scale.clone())
        assert cache.state.shape == (2, 2, 16, 5 + 1)
    assert (scales[-1] > scales[0]).all()  # the rescaling path was exercised
    torch.testing.assert_close(torch.cat(outs, dim=2), full, atol=1e-12, rtol=1e-10)


def test_cache_is_invalid_after_a_redraw():
    q, k, v = (t.detach() for t in _inputs(n_q=1, n_k=1))
    attn = attention.build("performer")
    cache = attn.new_cache()
    attn.forward_cached(q, k, v, cache)
    attn.redraw_features()
    with pytest.raises(ShapeError, match="new_cache"):
        attn.forward_cached(q, k, v, cache)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"num_features": 0}, "num_features"),
        ({"num_features": 2.0}, "num_features"),
        ({"redraw_interval": 0}, "redraw_interval"),
        ({"seed": "x"}, "seed"),
        ({"chunk_size": -1}, "chunk_size"),
        ({"orthogonal": 1}, "orthogonal"),
    ],
)
def test_bad_options_name_the_option(options, match):
    with pytest.raises(ConfigError, match=match):
        attention.build("performer", **options)


@pytest.mark.parametrize("causal", [False, True])
def test_default_options_work_at_short_lengths_forward_and_backward(causal):
    q, k, v = (torch.randn(2, 4, 100, 16, requires_grad=True) for _ in range(3))
    kpm = torch.ones(2, 100, dtype=torch.bool)
    kpm[1, :30] = False
    out = attention.build("performer")(q, k, v, causal=causal, key_padding_mask=kpm)
    out.square().sum().backward()
    assert out.shape == (2, 4, 100, 16) and torch.isfinite(out).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_streamed_non_causal_blocks_equal_one_block(monkeypatch):
    import polyformer.attention.kernels.linearized as linearized

    q, k, v = (t.detach() for t in _inputs(n_q=23, n_k=23))
    k = k * torch.linspace(0.2, 3.0, 23)[:, None]  # the stabiliser grows from block to block
    kpm = torch.ones(2, 23, dtype=torch.bool)
    kpm[0, :9] = False
    attn = attention.build("performer", num_features=16)
    whole = attn(q, k, v, key_padding_mask=kpm)
    monkeypatch.setattr(linearized, "_STREAM_BLOCK_ELEMENTS", 2 * 2 * 16 * 4)  # 4 positions per block
    torch.testing.assert_close(attn(q, k, v, key_padding_mask=kpm), whole, atol=1e-12, rtol=1e-10)
    w = attn.projection
    ref = naive_kernelized(favor_features(q, w, 1 / math.sqrt(8)), favor_features(k, w, 1 / math.sqrt(8)), v,
                           causal=False, key_padding_mask=kpm, q_offset=0)
    torch.testing.assert_close(whole, ref, atol=1e-12, rtol=1e-10)
