"""iGPT: Hugging Face parity (both heads), cached sampling equals the full pass, completion, bad input."""

import json

import pytest
import torch

import polyformer
from polyformer.errors import CheckpointError, ConfigError, ShapeError
from polyformer.models.igpt import ImageGPTConfig, ImageGPTForCausalImageModeling, ImageGPTForImageClassification
from _random_weights import randomise

transformers = pytest.importorskip("transformers")
ATOL = 1e-4


def _randomise(model):
    return randomise(model, seed=0)


def _hf(cls_name, tmp_path, **kwargs):
    config = transformers.ImageGPTConfig(**{**dict(vocab_size=9, n_positions=16, n_embd=32, n_layer=2, n_head=4), **kwargs})
    hf = _randomise(getattr(transformers, cls_name)(config))
    hf.save_pretrained(tmp_path)
    return hf


@pytest.mark.parametrize("kwargs", [dict(), dict(scale_attn_by_inverse_layer_idx=True, n_inner=48, n_head=2)],
                         ids=["default", "inverse-layer-scale"])
def test_causal_logits_and_loss_match_transformers(tmp_path, kwargs):
    hf = _hf("ImageGPTForCausalImageModeling", tmp_path, **kwargs)
    ours = polyformer.from_pretrained(tmp_path)
    assert isinstance(ours, ImageGPTForCausalImageModeling)
    ids = torch.cat([torch.full((2, 1), 8), torch.randint(0, 8, (2, 11))], dim=1)
    with torch.no_grad():
        expected, got = hf(ids, labels=ids), ours(ids, labels=ids)
    assert got.logits.shape == (2, 12, 8)  # the head never predicts the start token
    torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(got.loss, expected.loss, atol=ATOL, rtol=ATOL)


def test_classifier_matches_transformers_and_round_trips(tmp_path):
    hf = _hf("ImageGPTForImageClassification", tmp_path / "hf", num_labels=3)
    ours = polyformer.from_pretrained(tmp_path / "hf")
    assert isinstance(ours, ImageGPTForImageClassification)
    ids = torch.randint(0, 8, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=ATOL)
    ours.save_pretrained(tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["architectures"] == ["ImageGPTForImageClassification"]
    back = transformers.ImageGPTForImageClassification.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits, atol=ATOL, rtol=ATOL)


def test_causal_save_is_loaded_by_transformers(tmp_path):
    hf = _hf("ImageGPTForCausalImageModeling", tmp_path / "hf")
    polyformer.from_pretrained(tmp_path / "hf").save_pretrained(tmp_path / "ours")
    back = transformers.ImageGPTForCausalImageModeling.from_pretrained(tmp_path / "ours").eval()
    ids = torch.randint(0, 9, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits, atol=ATOL, rtol=ATOL)


def _tiny(attention="dense", **kwargs):
    torch.manual_seed(1)
    config = ImageGPTConfig(vocab_size=9, n_positions=16, d_model=32, n_layers=2, n_heads=4, attention=attention, **kwargs)
    return _randomise(ImageGPTForCausalImageModeling(config))


@pytest.mark.parametrize("attention", ["dense", {"name": "sliding_window", "options": {"window": 4}}])
def test_greedy_completion_with_caches_equals_argmax_of_full_passes(attention):
    model = _tiny(attention)
    prompt = torch.randint(0, 8, (2, 6))
    completed = model.complete(prompt, 16, temperature=0)
    assert torch.equal(completed[:, :6], prompt)
    # the same tokens, one full (uncached) forward per step
    seq = prompt.clone()
    for _ in range(6, 16):
        logits = model(model.with_start_token(seq)).logits[:, -1]
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(completed, seq)


def test_sampling_is_seeded():
    model = _tiny()
    prompt = torch.randint(0, 8, (1, 8))
    a = model.complete(prompt, 16, num_samples=3, generator=torch.Generator().manual_seed(5))
    b = model.complete(prompt, 16, num_samples=3, generator=torch.Generator().manual_seed(5))
    assert a.shape == (3, 16) and torch.equal(a, b)
    # the shared generation loop draws them: top-k 1 is the greedy completion
    assert torch.equal(model.complete(prompt, 16, top_k=1), model.complete(prompt, 16, temperature=0))


def test_image_nll_is_the_mean_cross_entropy_of_next_pixels():
    model = _tiny()
    pixels = torch.randint(0, 8, (2, 16))
    logits = model(model.with_start_token(pixels[:, :-1])).logits
    manual = -torch.log_softmax(logits, -1).gather(-1, pixels[..., None]).mean()
    torch.testing.assert_close(model.image_nll(pixels), manual)


def test_bad_inputs_are_named(tmp_path):
    model = _tiny()
    with pytest.raises(ShapeError, match="palette colours"):
        model.image_nll(torch.full((1, 16), 8))  # the start token is not a pixel
    with pytest.raises(ShapeError, match="prompt pixels .* total_length"):
        model.complete(torch.zeros(1, 16, dtype=torch.long), 16)
    with pytest.raises(ShapeError, match="exceed n_positions"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ConfigError, match="temperature"):
        model.complete(torch.zeros(1, 4, dtype=torch.long), 16, temperature=-1)
    _hf("ImageGPTForImageClassification", tmp_path, num_labels=4)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["id2label"] = {"0": "a", "1": "b"}
    raw.pop("label2id", None)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="score.weight has 4 rows"):
        polyformer.from_pretrained(tmp_path)
