"""``lsh`` (Reformer) attention: dense when one bucket covers the sequence, a naive loop of the
same sort-and-chunk algorithm otherwise, and an error that falls as ``n_hashes`` grows."""

import math

import pytest
import torch
import torch.nn.functional as F

from polyformer import attention
from polyformer.attention import reference_attention
from polyformer.attention.lsh import MAX_BUCKETS_PER_ROTATION, hash_buckets, plan_buckets
from polyformer.errors import ConfigError

SELF_SCORE = -1.0e5


def _inputs(b=2, h=2, n=13, d=6, dv=5, dtype=torch.float64):
    return [torch.randn(b, h, n, x, dtype=dtype, requires_grad=True) for x in (d, d, dv)]


def _softmax_or_none(scores, values):
    """(lse, softmax(scores) @ values) over a non-empty list, or None."""
    if not scores:
        return None
    s = torch.stack(scores)
    return torch.logsumexp(s, 0), torch.softmax(s, 0) @ torch.stack(values)


def _combine_rounds(results, dv, dtype):
    """Log-sum-exp combination of per-round (lse, out); rounds without keys are skipped."""
    results = [r for r in results if r is not None]
    if not results:
        return torch.zeros(dv, dtype=dtype)
    lse = torch.stack([r[0] for r in results])
    weights = torch.softmax(lse, 0)
    return sum(w * r[1] for w, r in zip(weights, results))


def naive_lsh(attn, q, k, v, *, causal=False, key_padding_mask=None, scale=None, same_qk=False):
    """Reformer's algorithm written as loops: sort by (bucket, position), chunk, look one back."""
    opts = attn.options
    b, h, n, d = q.shape
    scale = 1 / math.sqrt(d) if scale is None else scale
    keys = F.normalize(k, dim=-1) if opts.shared_qk else k
    factors = plan_buckets(n, opts.bucket_size, opts.n_buckets)
    n_buckets = math.prod(factors)
    c = min(opts.bucket_size, n)
    n_chunks = math.ceil(n / c)
    n_pos = n_chunks * c
    rotations = attn.rotations(d, factors)
    kb = hash_buckets(keys.detach().reshape(-1, d), rotations, factors).view(-1, b, h, n)
    qb = kb if same_qk else hash_buckets(q.detach().reshape(-1, d), rotations, factors).view(-1, b, h, n)
    out = torch.zeros(b, h, n, v.shape[-1], dtype=v.dtype)
    for bi in range(b):
        for hi in range(h):
            per_round = [[] for _ in range(n)]
            for r in range(opts.n_hashes):
                def order(buckets):
                    bucket_of = lambda p: buckets[r, bi, hi, p].item() if p < n else n_buckets  # noqa: E731
                    return sorted(range(n_pos), key=lambda p: (bucket_of(p), p))
                q_order, k_order = order(qb), order(kb)
                for rank, i in enumerate(q_order):
                    if i >= n:
                        continue
                    chunk = rank // c
                    window = set(k_order[chunk * c : (chunk + 1) * c])
                    if n_chunks > 1:
                        prev = (chunk - 1) % n_chunks
                        window |= set(k_order[prev * c : (prev + 1) * c])
                    scores, values = [], []
                    for j in sorted(window):
                        if j >= n or (key_padding_mask is not None and not key_padding_mask[bi, j]):
                            continue
                        if causal and j > i:
                            continue
                        if opts.shared_qk and j == i:
                            scores.append(torch.tensor(SELF_SCORE, dtype=q.dtype))
                        else:
                            scores.append(q[bi, hi, i] @ keys[bi, hi, j] * scale)
                        values.append(v[bi, hi, j])
                    per_round[i].append(_softmax_or_none(scores, values))
            for i in range(n):
                out[bi, hi, i] = _combine_rounds(per_round[i], v.shape[-1], v.dtype)
    return out


def naive_bucket_match(attn, q, k, v, *, causal, key_padding_mask=None):
    """Queries of a different length than the keys: exact attention within the query's bucket."""
    opts = attn.options
    b, h, n_q, d = q.shape
    n_k = k.shape[2]
    keys = F.normalize(k, dim=-1) if opts.shared_qk else k
    factors = plan_buckets(n_k, opts.bucket_size, opts.n_buckets)
    rotations = attn.rotations(d, factors)
    qb = hash_buckets(q.reshape(-1, d), rotations, factors).view(-1, b, h, n_q)
    kb = hash_buckets(keys.reshape(-1, d), rotations, factors).view(-1, b, h, n_k)
    offset = n_k - n_q if causal else 0  # the protocol's default q_offset
    out = torch.zeros(b, h, n_q, v.shape[-1], dtype=v.dtype)
    for bi in range(b):
        for hi in range(h):
            for i in range(n_q):
                results = []
                for r in range(opts.n_hashes):
                    scores, values = [], []
                    for j in range(n_k):
                        if kb[r, bi, hi, j] != qb[r, bi, hi, i]:
                            continue
                        if key_padding_mask is not None and not key_padding_mask[bi, j]:
                            continue
                        if causal and j > i + offset:
                            continue
                        if opts.shared_qk and j == i + offset:
                            scores.append(torch.tensor(SELF_SCORE, dtype=q.dtype))
                        else:
                            scores.append(q[bi, hi, i] @ keys[bi, hi, j] / math.sqrt(d))
                        values.append(v[bi, hi, j])
                    results.append(_softmax_or_none(scores, values))
                out[bi, hi, i] = _combine_rounds(results, v.shape[-1], v.dtype)
    return out


def _padding(b, n):
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, :3] = False  # early causal rows of batch 0 have no key
    mask[1, -4:] = False
    return mask


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("bucket_size", [13, 64])  # one chunk and one bucket: dense attention
def test_one_bucket_equals_dense_attention_forward_and_backward(causal, padded, bucket_size):
    q, k, v = _inputs()
    kpm = _padding(2, 13) if padded else None
    attn = attention.build("lsh", bucket_size=bucket_size, n_hashes=3)
    got = attn(q, k, v, causal=causal, key_padding_mask=kpm)
    ref = reference_attention(q, k, v, causal=causal, key_padding_mask=kpm)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-10)
    grad = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        assert not a.isnan().any()
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_shared_qk_with_one_bucket_is_dense_attention_without_self(causal):
    q, _, v = _inputs()
    attn = attention.build("lsh", bucket_size=64, shared_qk=True)
    got = attn(q, q, v, causal=causal)
    allowed = ~torch.eye(13, dtype=torch.bool)
    if causal:
        allowed[0, 0] = True  # position 0 sees only itself: it must attend to itself
    ref = reference_attention(q, F.normalize(q, dim=-1), v, allowed=allowed, causal=causal)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(
    "options,causal,padded",
    [
        ({"bucket_size": 4, "n_hashes": 2}, False, False),
        ({"bucket_size": 4, "n_hashes": 3}, True, True),
        ({"bucket_size": 3, "n_hashes": 2, "shared_qk": True}, True, False),
        ({"bucket_size": 5, "n_hashes": 2, "shared_qk": True}, False, True),  # 5 does not divide 19
        ({"bucket_size": 2, "n_hashes": 1, "n_buckets": 4}, True, False),
    ],
)
def test_many_buckets_match_a_naive_loop_of_the_algorithm(options, causal, padded):
    q, k, v = _inputs(n=19)
    kpm = _padding(2, 19) if padded else None
    attn = attention.build("lsh", **options)
    got = attn(q, k, v, causal=causal, key_padding_mask=kpm)
    ref = naive_lsh(attn, q, k, v, causal=causal, key_padding_mask=kpm)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-10)
    grad = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)


@pytest.mark.parametrize("causal", [False, True])
def test_one_tensor_for_queries_and_keys_shares_the_sort_order(causal):
    q, _, v = _inputs(n=18)
    kpm = _padding(2, 18)
    attn = attention.build("lsh", bucket_size=4, n_hashes=2, shared_qk=True)
    got = attn(q, q, v, causal=causal, key_padding_mask=kpm)
    ref = naive_lsh(attn, q, q, v, causal=causal, key_padding_mask=kpm, same_qk=True)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-10)
    grad = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (q, v), grad), torch.autograd.grad(ref, (q, v), grad)):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)


@pytest.mark.parametrize("shared_qk", [False, True])
def test_custom_backward_passes_gradcheck(shared_qk):
    q, k, v = (t.detach()[:1, :1, :12, :4].requires_grad_() for t in _inputs(n=12))
    kpm = torch.ones(1, 12, dtype=torch.bool)
    kpm[0, 2] = False
    attn = attention.build("lsh", bucket_size=3, n_hashes=2, shared_qk=shared_qk)
    assert torch.autograd.gradcheck(lambda a, b, c: attn(a, b, c, causal=True, key_padding_mask=kpm), (q, k, v))
    # one tensor as queries and keys: the shared sort order (self on the window diagonal)
    assert torch.autograd.gradcheck(lambda a, c: attn(a, a, c, key_padding_mask=kpm), (q, v))


def _clustered(seed, n=256, d=16, clusters=16):
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(clusters, d, generator=g), dim=-1) * 4
    x = centers[torch.randint(0, clusters, (2, 2, n), generator=g)] + 0.3 * torch.randn(2, 2, n, d, generator=g)
    k = x + 0.1 * torch.randn(x.shape, generator=g)
    return x, k, torch.randn(2, 2, n, 8, generator=g)


@pytest.mark.parametrize("causal", [False, True])
def test_error_against_dense_falls_as_n_hashes_grows(causal):
    errors = []
    for n_hashes in (1, 2, 4, 8):
        trials = []
        for seed in range(3):
            q, k, v = _clustered(seed)
            attn = attention.build("lsh", bucket_size=16, n_hashes=n_hashes, seed=seed)
            exact = reference_attention(q, k, v, causal=causal)
            trials.append((attn(q, k, v, causal=causal) - exact).pow(2).mean().sqrt())
        errors.append(torch.stack(trials).mean().item())
    assert all(later < 0.95 * earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.6 * errors[0], errors


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shared_qk", [False, True])
def test_decoding_attends_exactly_within_the_query_bucket(causal, shared_qk):
    q, k, v = (t.detach() for t in _inputs(n=24))
    kpm = _padding(2, 24)
    attn = attention.build("lsh", bucket_size=4, n_hashes=2, shared_qk=shared_qk)
    last = q[:, :, -3:]
    got = attn(last, k, v, causal=causal, key_padding_mask=kpm)
    ref = naive_bucket_match(attn, last, k, v, causal=causal, key_padding_mask=kpm)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-10)


def test_kv_cache_decoding_with_one_bucket_equals_full_causal_attention():
    q, k, v = (t.detach() for t in _inputs(n=10))
    attn = attention.build("lsh", bucket_size=64)
    cache = attn.new_cache()
    steps = [attn.forward_cached(q[:, :, :4], k[:, :, :4], v[:, :, :4], cache)]
    for t in range(4, 10):
        steps.append(attn.forward_cached(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], cache))
    torch.testing.assert_close(torch.cat(steps, 2), reference_attention(q, k, v, causal=True))


def test_empty_rows_give_zeros_and_zero_gradients():
    q, k, v = _inputs(n=20)
    kpm = torch.ones(2, 20, dtype=torch.bool)
    kpm[1] = False
    out = attention.build("lsh", bucket_size=4)(q, k, v, key_padding_mask=kpm)
    assert torch.all(out[1] == 0)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(torch.isfinite(g).all() and torch.all(g[1] == 0) for g in grads)


def test_seeded_and_reproducible():
    q, k, v = (t.detach() for t in _inputs(n=40))
    a = attention.build("lsh", bucket_size=4, seed=7)(q, k, v)
    b = attention.build("lsh", bucket_size=4, seed=7)(q, k, v)
    c = attention.build("lsh", bucket_size=4, seed=8)(q, k, v)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_bucket_plan_keeps_rotations_bounded_at_any_length():
    assert plan_buckets(100, 128) == ()  # one bucket
    assert plan_buckets(64 * 1024, 64) == (32, 32)  # 1024 buckets from two D×16 rotations
    for n in (10**3, 10**5, 10**7):
        factors = plan_buckets(n, 64)
        assert all(f <= MAX_BUCKETS_PER_ROTATION for f in factors)
        assert math.prod(factors) == 2 ** round(math.log2(n / 64))
    attn = attention.build("lsh")
    rotations = attn.rotations(64, plan_buckets(2**20, 64))
    assert rotations.shape[-1] <= 32 * len(plan_buckets(2**20, 64))  # O(D·log N), not O(D·N)


def test_hash_is_angular_and_covers_all_buckets():
    x = torch.randn(4096, 8)
    rotations = torch.randn(1, 8, 4 + 2)
    buckets = hash_buckets(x, rotations, (8, 4))[0]
    assert buckets.min() >= 0 and buckets.max() < 32 and buckets.unique().numel() > 24
    torch.testing.assert_close(hash_buckets(3.0 * x, rotations, (8, 4))[0], buckets)  # scale-free


def test_hash_equals_its_definition():
    """Per factor f: digit = argmax([xR_f, -xR_f]); digits in mixed radix form the bucket."""
    torch.manual_seed(3)
    factors = (8, 4, 2)
    x = torch.randn(2048, 16)
    rotations = torch.randn(3, 16, sum(f // 2 for f in factors))
    got = hash_buckets(x, rotations, factors)
    expected = torch.zeros_like(got)
    clear = torch.ones_like(got, dtype=torch.bool)  # rows whose argmax is not a near-tie
    for r in range(3):
        projected, offset = x @ rotations[r], 0
        for f in factors:
            candidates = torch.cat([projected[:, offset : offset + f // 2], -projected[:, offset : offset + f // 2]], 1)
            top2 = candidates.topk(2, dim=1).values
            clear[r] &= (top2[:, 0] - top2[:, 1]) > 1e-4 * top2[:, 0].abs()
            expected[r] = expected[r] * f + candidates.argmax(1)
            offset += f // 2
    assert clear.float().mean() > 0.99
    assert torch.equal(got[clear], expected[clear])


def test_bfloat16_inputs():
    q, k, v = (t.detach().float() for t in _inputs(n=40))
    attn = attention.build("lsh", bucket_size=64)
    got = attn(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), reference_attention(q, k, v), atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"n_hashes": 0}, "n_hashes"),
        ({"bucket_size": 0}, "bucket_size"),
        ({"bucket_size": 8.0}, "bucket_size"),
        ({"n_buckets": 6}, "n_buckets"),
        ({"shared_qk": "yes"}, "shared_qk"),
        ({"seed": None}, "seed"),
    ],
)
def test_bad_options_name_the_option(options, match):
    with pytest.raises(ConfigError, match=match):
        attention.build("lsh", **options)


@pytest.mark.parametrize("causal", [False, True])
def test_default_options_work_at_short_lengths_forward_and_backward(causal):
    q, k, v = (torch.randn(2, 4, 100, 16, requires_grad=True) for _ in range(3))
    kpm = torch.ones(2, 100, dtype=torch.bool)
    kpm[1, :30] = False
    out = attention.build("lsh")(q, k, v, causal=causal, key_padding_mask=kpm)
    out.square().sum().backward()
    assert out.shape == (2, 4, 100, 16) and torch.isfinite(out).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
