"""The byte-level classifier: encoding, pooling against hand computations, training with every mechanism."""

import json

import pytest
import torch

from polyformer import attention
from polyformer.attention import patterns
from polyformer.errors import ConfigError, ShapeError
from polyformer.models.byte_classifier import (
    CLS_ID,
    PAD_ID,
    ByteClassifier,
    ByteClassifierConfig,
    encode_bytes,
    marker_task,
    train_step,
)
from polyformer.transformer import TransformerConfig


def tiny_config(mechanism="dense", options=None, **fields) -> ByteClassifierConfig:
    core = TransformerConfig(d_model=32, n_heads=2, n_layers=2, d_ff=64,
                             attention={"name": mechanism, "options": options or {}})
    return ByteClassifierConfig(**{"max_length": 128, "transformer": core, **fields})


def test_encode_bytes_pads_cuts_and_places_cls():
    ids, mask = encode_bytes([b"ab", "héllo wörld"], 6, cls=True)
    assert ids[0].tolist() == [CLS_ID, 97, 98, PAD_ID, PAD_ID, PAD_ID]
    assert ids[1].tolist() == [CLS_ID] + list("héllo".encode("utf-8"))[:5]
    assert mask.tolist() == [[True, True, True, False, False, False], [True] * 6]
    ids, mask = encode_bytes([b""], 3)
    assert ids.tolist() == [[PAD_ID] * 3] and not mask.any()


def test_mean_pooling_ignores_padding():
    model = ByteClassifier(tiny_config(positions="sinusoidal")).eval()
    ids, mask = model.encode([b"some text", b"other"], 16)
    hidden = model.encoder(model.embed(ids) + model.positions(torch.arange(16)), key_padding_mask=mask)
    expected = torch.stack([hidden[i, mask[i]].mean(0) for i in range(2)])  # a loop over real tokens
    assert torch.allclose(model.pool(hidden, mask), expected, atol=1e-6)
    assert torch.allclose(model(ids, mask), model.head(expected), atol=1e-6)
    # Changing what sits under the padding changes nothing.
    noisy = ids.masked_fill(~mask, 65)
    assert torch.allclose(model(noisy, mask), model(ids, mask), atol=1e-5)


def test_cls_pooling_reads_position_zero():
    model = ByteClassifier(tiny_config(pooling="cls")).eval()
    ids, mask = model.encode([b"abc"], 8)
    assert ids[0, 0] == CLS_ID
    h = model.encoder(model.embed(ids) + model.positions(torch.arange(8)), key_padding_mask=mask)
    assert torch.allclose(model(ids, mask), model.head(h[:, 0]), atol=1e-6)


def test_config_round_trip_and_bad_values():
    config = tiny_config("sliding_window", {"window": 4}, pooling="cls", n_classes=3)
    again = ByteClassifierConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ConfigError, match="pooling"):
        tiny_config(pooling="max")
    with pytest.raises(ConfigError, match="positions"):
        tiny_config(positions="rotary")
    with pytest.raises(ConfigError, match="n_classes"):
        tiny_config(n_classes=0)
    with pytest.raises(ConfigError, match="unknown field"):
        ByteClassifierConfig.from_dict({"classes": 2})


def test_bad_inputs_name_the_problem():
    model = ByteClassifier(tiny_config())
    with pytest.raises(ShapeError, match="max_length"):
        model(torch.zeros(1, 129, dtype=torch.long))
    with pytest.raises(ShapeError, match="mask must be"):
        model(torch.zeros(1, 8, dtype=torch.long), torch.ones(1, 7, dtype=torch.bool))
    with pytest.raises(ShapeError, match="batch, length"):
        model(torch.zeros(8, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"0\.\.257.*model.encode"):
        model(torch.full((1, 8), 300))


def test_marker_task_labels_say_whether_the_marker_occurs():
    ids, labels = marker_task(64, 40, marker=7, generator=torch.Generator().manual_seed(1), cls=True)
    assert ((ids[:, 1:] == 7).any(1).long() == labels).all()
    assert (ids[:, 0] == CLS_ID).all() and 10 < int(labels.sum()) < 54


# Options for mechanisms that need them, or that should exercise their own kernel at a short length.
TRAIN_OPTIONS = {
    "sparse": {"pattern": patterns.Band(8, 8) | patterns.Global([0]), "backend": "kernel", "tile_size": 16},
    "sliding_window": {"window": 8, "backend": "kernel", "tile_size": 16},
    "longformer": {"window": 16, "global_tokens": (0,), "backend": "kernel", "tile_size": 16},
    "bigbird": {"block_size": 8, "backend": "kernel"},
    "dilated": {"window": 8, "dilation": 2, "backend": "kernel", "tile_size": 16},
    "random": {"count": 8, "backend": "kernel"},
    "block_local": {"size": 16, "backend": "kernel"},
    "global": {"tokens": (0,), "backend": "kernel", "tile_size": 16},
    "lsh": {"bucket_size": 16, "n_hashes": 2},
}
#: Only the global token sees the whole sequence under "global" attention: pool that token (CLS).
CLS_POOLED = {"global"}


@pytest.mark.parametrize("mechanism", attention.list())
def test_classifier_learns_the_marker_task_with_every_mechanism(mechanism):
    torch.manual_seed(0)
    cls = mechanism in CLS_POOLED
    # Mean pooling elsewhere lets every token vote, so local mechanisms can solve the task too.
    config = tiny_config(mechanism, TRAIN_OPTIONS.get(mechanism, {}), max_length=32,
                         pooling="cls" if cls else "mean")
    model = ByteClassifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    test_ids, test_labels = marker_task(64, 32, generator=generator, cls=cls)
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(model(test_ids), test_labels).item()
    for _ in range(40):
        ids, labels = marker_task(16, 32, generator=generator, cls=cls)
        train_step(model, optimizer, ids, labels)
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(model(test_ids), test_labels).item()
    assert after < 0.5 * before, (mechanism, before, after)


def test_random_attention_gradients_with_head_views():
    # Found by the classifier: the key-list kernel's backward failed on q/k/v that are transposed
    # views (B, N, H, D) -> (B, H, N, D), which is what multi-head layers pass.
    mechanism = attention.build("random", count=4, backend="kernel")
    x = torch.randn(2, 16, 2, 8, dtype=torch.float64, requires_grad=True)
    out = mechanism(*(x.transpose(1, 2) * s for s in (1.0, 2.0, 3.0)))
    grad = torch.autograd.grad(out.sum(), x)[0]
    x_ref = x.detach().clone().requires_grad_()
    ref = attention.reference_attention(*(x_ref.transpose(1, 2).contiguous() * s for s in (1.0, 2.0, 3.0)),
                                        allowed=mechanism.pattern.dense(16, 2))
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.allclose(grad, torch.autograd.grad(ref.sum(), x_ref)[0], atol=1e-12)


def test_module_docstring_example():
    import doctest

    from polyformer.models import byte_classifier

    result = doctest.testmod(byte_classifier)
    assert result.attempted > 0 and result.failed == 0
