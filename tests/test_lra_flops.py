"""The FLOP counter of the LRA table: hand computations and torch's own FLOP counter as references."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from polyformer import attention
from polyformer.attention import AttentionSpec
from polyformer.bench.lra import _NoAttention
from polyformer.bench.lra_flops import (
    attention_forward_flops,
    flop_bound,
    keys_per_query,
    linear_flops_per_token,
    pattern_pairs,
    training_step_flops,
)
from polyformer.errors import ConfigError
from polyformer.models.byte_classifier import ByteClassifier, ByteClassifierConfig, marker_task
from polyformer.transformer import TransformerConfig

TINY = TransformerConfig(d_model=32, n_heads=2, n_layers=2, d_ff=64)


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_step_flops_by_hand_for_a_tiny_config():
    batch, n = 3, 16
    # Per layer and token: q, k, v, out are 32x32 products, fc_in 32x64, fc_out 64x32; 2 FLOPs each.
    per_token = 2 * 2 * (4 * 32 * 32 + 2 * 32 * 64)
    assert linear_flops_per_token(TINY) == per_token == 32768
    head = 2 * 32 * 2 * batch
    dense_attention = 2 * 4 * 16 * n * n * 2 * batch  # layers * 4·D·N² * heads * batch
    flops = training_step_flops(TINY, batch, n)
    assert flops.other == 3 * (per_token * batch * n + head)
    assert flops.attention == 3 * dense_attention
    # Sliding window, window 3 at N = 10: keys per query 3, 4, 5 x 6, 4, 3 = 44 pairs per head.
    window = AttentionSpec("sliding_window", {"window": 3})
    assert pattern_pairs(window, 10, 2) == 2 * 44
    assert attention_forward_flops(window, 10, 2, 16) == 4 * 16 * 44 * 2
    assert keys_per_query(window, 10, 2) == pytest.approx(4.4)


def test_non_attention_flops_match_torch_flop_counter_on_the_model():
    # With attention replaced by v, torch counts every product of the step except attention's.
    config = ByteClassifierConfig(max_length=16, transformer=TINY)
    model = ByteClassifier(config)
    for layer in model.encoder.layers:
        layer.attn.mechanism = _NoAttention()
    ids, labels = marker_task(3, 16)

    def step():
        torch.nn.functional.cross_entropy(model(ids), labels).backward()

    assert counted(step) == training_step_flops(TINY, 3, 16).other


def test_dense_attention_flops_match_torch_flop_counter_on_the_reference():
    q, k, v = (torch.randn(2, 3, 20, 8, requires_grad=True) for _ in range(3))
    total = counted(lambda: attention.reference_attention(q, k, v).sum().backward())
    assert total == 3 * 2 * attention_forward_flops("dense", 20, 3, 8)  # batch 2, training = 3 forwards
    assert attention_forward_flops("memory_efficient", 20, 3, 8) == attention_forward_flops("dense", 20, 3, 8)


@pytest.mark.parametrize("name, options, rel", [
    ("linear", {}, 0.0),
    ("performer", {}, 0.01),
    ("performer", {"num_features": 32}, 0.01),
])
def test_kernelized_flops_match_torch_flop_counter(name, options, rel):
    mechanism = attention.build(name, **options)
    q, k, v = (torch.randn(1, 2, 128, 16) for _ in range(3))
    with torch.no_grad():
        mechanism(q, k, v)  # draw the performer's features outside the count
        total = counted(lambda: mechanism(q, k, v))
    assert total == pytest.approx(attention_forward_flops({"name": name, "options": options}, 128, 2, 16), rel=rel)


def test_lsh_flops_by_hand_and_against_the_kernel():
    spec = {"name": "lsh", "options": {"bucket_size": 64, "n_hashes": 2}}
    # N = 256, bucket 64: 4 chunks, 128 keys per query; 4 buckets -> one rotation of width 2.
    per_round = 4 * 256 * 128 * 8 + 2 * 2 * 256 * 8 * 2
    assert attention_forward_flops(spec, 256, 1, 8) == 2 * per_round
    assert keys_per_query(spec, 256, 1) == 256
    mechanism = attention.build("lsh", bucket_size=16, n_hashes=2)
    q, k, v = (torch.randn(1, 2, 256, 16) for _ in range(3))
    with torch.no_grad():
        total = counted(lambda: mechanism(q, k, v))
    ideal = attention_forward_flops({"name": "lsh", "options": {"bucket_size": 16, "n_hashes": 2}}, 256, 2, 16)
    # The kernel computes at most one window per round more than the ideal count (16 chunks here).
    assert ideal <= total <= ideal * (1 + 1 / 16)


PATTERNS = [
    ("sliding_window", {"window": 7}), ("longformer", {"window": 8, "global_tokens": (0, 5)}),
    ("bigbird", {"block_size": 8}), ("dilated", {"window": 4}), ("random", {"count": 5}),
    ("block_local", {"size": 16}), ("global", {"tokens": (0, 3, -1)}),
]


@pytest.mark.parametrize("name, options", PATTERNS)
@pytest.mark.parametrize("n", [37, 128])
def test_pattern_pairs_equal_the_dense_mask(name, options, n):
    spec = AttentionSpec(name, options)
    assert pattern_pairs(spec, n, 4) == int(spec.build().pattern.dense(n, 4).sum())


def test_flop_bound():
    assert flop_bound(TINY, 8, 64, "dense") == 1.0
    window = {"name": "sliding_window", "options": {"window": 4}}
    dense, local = training_step_flops(TINY, 8, 64), training_step_flops(TINY, 8, 64, attention=window)
    assert flop_bound(TINY, 8, 64, window) == pytest.approx(dense.total / local.total)
    assert 1.0 < flop_bound(TINY, 8, 64, window) < dense.total / dense.other
    assert keys_per_query("linear", 64, 2) is None and math.isclose(keys_per_query("dense", 64, 2), 64)


def test_unknown_mechanism_is_a_clear_error():
    from polyformer.attention.base import AttentionMechanism
    from polyformer.attention.registry import _REGISTRY, register

    @register
    class _Uncounted(AttentionMechanism):
        name = "test_uncounted"

    try:
        with pytest.raises(ConfigError, match="no FLOP formula for attention 'test_uncounted'"):
            attention_forward_flops("test_uncounted", 8, 1, 4)
    finally:
        _REGISTRY.pop("test_uncounted")
