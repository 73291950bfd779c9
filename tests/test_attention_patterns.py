"""Atomic patterns and composites: closed-form semantics, tile classes, composition, errors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polyformer.attention import patterns as P
from polyformer.attention.composites import bigbird, longformer
from polyformer.errors import ConfigError


def _pairs(n):
    q = torch.arange(n)[:, None].expand(n, n)
    k = torch.arange(n)[None, :].expand(n, n)
    return q, k


def test_atoms_match_their_definitions():
    n = 23
    q, k = _pairs(n)
    assert torch.equal(P.Band(3, 1).dense(n), (k >= q - 3) & (k <= q + 1))
    assert torch.equal(P.Causal().dense(n), k <= q)
    assert torch.equal(P.BlockLocal(5).dense(n), q // 5 == k // 5)
    g = P.Global([0, 7, -1]).dense(n)
    is_g = lambda x: (x == 0) | (x == 7) | (x == n - 1)  # noqa: E731
    assert torch.equal(g, is_g(q) | is_g(k))
    d = P.Dilated(2, 2, 3).dense(n)
    diff = k - q
    assert torch.equal(d, (diff % 3 == 0) & (diff.abs() <= 6))


def test_per_head_dilation():
    d = P.Dilated(1, 1, (1, 2)).dense(10, n_heads=2)
    assert d.shape == (2, 10, 10)
    assert d[0, 5, 4] and not d[0, 5, 3]
    assert d[1, 5, 3] and not d[1, 5, 4]


def test_random_draws_distinct_keys_reproducibly():
    n = 50
    r = P.Random(4, seed=3).dense(n)
    assert torch.all(r.sum(-1) == 4)
    assert torch.equal(r, P.Random(4, seed=3).dense(n))
    assert not torch.equal(r, P.Random(4, seed=4).dense(n))
    heads = P.Random(4, seed=3, per_head=True).dense(n, n_heads=3)
    assert not torch.equal(heads[0], heads[1])


def test_random_blocks_avoid_given_pattern():
    avoid = P.Band(15, 15)
    r = P.Random(2, unit=8, seed=1, avoid=P.Band(8, 8)).dense(64)
    assert torch.all(r.sum(-1) == 16)  # two whole blocks of 8 keys
    blocks = r.view(8, 8, 8, 8)[:, 0, :, 0]  # (query block, key block)
    assert not (blocks & torch.eye(8, dtype=torch.bool)).any()  # never the own block
    del avoid


def test_union_and_intersection():
    a, b = P.Band(2, 0), P.Global([4])
    assert torch.equal((a | b).dense(12), a.dense(12) | b.dense(12))
    assert torch.equal((a & b).dense(12), a.dense(12) & b.dense(12))
    assert torch.equal(P.or_masks(a, b, P.Causal()).dense(12), a.dense(12) | b.dense(12) | P.Causal().dense(12))


def test_user_defined_pattern_from_mask_mod():
    def prefix_lm(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) | (kv_idx < 4)

    pattern = P.from_mask_mod(prefix_lm, label="prefix_lm")
    q, k = _pairs(10)
    assert torch.equal(pattern.dense(10), (k <= q) | (k < 4))


def test_longformer_and_bigbird_composites():
    n = 64
    q, k = _pairs(n)
    lf = longformer(8, global_tokens=[0, 5]).dense(n)
    local = (k - q).abs() <= 4
    glob = (q == 0) | (q == 5) | (k == 0) | (k == 5)
    assert torch.equal(lf, local | glob)

    bb = bigbird(block_size=8, window_blocks=3, global_blocks=2, random_blocks=2, seed=0).dense(n, n_heads=2)
    blocks = bb[:, ::8, ::8]  # pattern is constant on 8x8 blocks
    assert torch.equal(bb, blocks.repeat_interleave(8, 1).repeat_interleave(8, 2))
    qb, kb = torch.arange(8)[:, None], torch.arange(8)[None, :]
    window = (qb - kb).abs() <= 1
    global_ = (qb == 0) | (qb == 7) | (kb == 0) | (kb == 7)
    assert torch.all(blocks[:, window | global_])
    random_per_row = (blocks & ~(window | global_)).sum(-1)
    assert torch.all(random_per_row[:, 1:7] == 2)  # two random blocks per non-global row
    assert not torch.equal(blocks[0], blocks[1])  # drawn per head
    assert torch.equal(bb, bigbird(8, 3, 2, 2, seed=0).dense(n, n_heads=2))


PATTERNS = [
    P.Band(3, 2), P.Causal(), P.Dilated(2, 1, (1, 2, 3)), P.BlockLocal(5), P.BlockLocal(16),
    P.Global([0, 7, -1]), P.Random(3, seed=1), P.Random(2, unit=4, per_head=True),
    longformer(6, [0, 1]), longformer(4, [2], dilation=(1, 2, 1)), bigbird(4, 3, 2, 2),
    P.Band(4, 0) & P.BlockLocal(8), P.from_mask_mod(lambda b, h, q, k: (q + k) % 3 == 0),
]


@settings(max_examples=60, deadline=None)
@given(
    pattern=st.sampled_from(PATTERNS),
    n=st.integers(8, 70),
    block=st.sampled_from([1, 2, 4, 8, 16]),
)
def test_tile_classes_agree_with_the_dense_mask(pattern, n, block):
    """FULL tiles allow every pair, EMPTY tiles none (PARTIAL may be anything)."""
    heads = 3
    dense = pattern.dense(n, heads)
    classes = pattern.block_mask(n, block, heads).expand(heads, -1, -1)
    nb = math.ceil(n / block)
    padded = torch.zeros(heads, nb * block, nb * block, dtype=torch.bool)
    padded[:, :n, :n] = dense
    valid = torch.zeros(nb * block, nb * block, dtype=torch.bool)
    valid[:n, :n] = True
    tiles = padded.view(heads, nb, block, nb, block)
    valid = valid.view(nb, block, nb, block)
    any_allowed = (tiles & valid).any(dim=(2, 4))
    all_allowed = (tiles | ~valid).all(dim=(2, 4))
    assert not (any_allowed & (classes == P.EMPTY)).any()
    assert all_allowed[classes == P.FULL].all()


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: P.Band(-1, 2), "before must be an integer >= 0"),
        (lambda: P.Dilated(2, 2, 0), "dilation must be an integer >= 1"),
        (lambda: P.BlockLocal(0), "size must be an integer >= 1"),
        (lambda: P.Random(-2), "count must be an integer >= 0"),
        (lambda: longformer(7), "window must be a positive even integer"),
        (lambda: bigbird(window_blocks=2), "window_blocks must be odd"),
        (lambda: bigbird(block_size=0), "block_size must be an integer >= 1"),
        (lambda: P.Global([0, 40]).dense(16), "index 40 is out of range for a sequence of length 16"),
        (lambda: P.Dilated(1, 1, (1, 2)).dense(8, n_heads=3), "2 per-head dilations given but the input has 3 heads"),
        (lambda: P.Band(1, 1) | "window", "expected a Pattern"),
    ],
)
def test_bad_pattern_arguments_name_the_problem(make, match):
    with pytest.raises(ConfigError, match=match):
        make()
