"""ViT: Hugging Face parity through the production converter, both key spellings, save/load, bad input."""

import json

import pytest
import torch

import polyformer
from polyformer.convert import load_state_dict, save_state_dict
from polyformer.errors import CheckpointError, ConfigError, ShapeError
from polyformer.models.vit import ViTConfig, ViTForImageClassification, ViTModel
from _random_weights import randomise

transformers = pytest.importorskip("transformers")
ATOL = 1e-4


def _randomise(model):
    return randomise(model, seed=0)


def _hf_classifier(tmp_path, **kwargs):
    defaults = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, num_labels=5)
    hf = _randomise(transformers.ViTForImageClassification(transformers.ViTConfig(**{**defaults, **kwargs})))
    hf.save_pretrained(tmp_path)
    return hf


CONFIGS = [
    dict(),
    dict(patch_size=8, image_size=32, qkv_bias=False),
    dict(patch_size=2, image_size=10, num_channels=1, hidden_act="gelu_new", num_labels=3),
    dict(patch_size=4, image_size=[12, 20], hidden_size=48, num_attention_heads=3),
]


@pytest.mark.parametrize("kwargs", CONFIGS, ids=["p4-16", "p8-32-no-qkv-bias", "p2-gray-gelu_new", "p4-12x20"])
def test_logits_match_transformers(tmp_path, kwargs):
    hf = _hf_classifier(tmp_path, **kwargs)
    ours = polyformer.from_pretrained(tmp_path)
    assert isinstance(ours, ViTForImageClassification)
    size = kwargs.get("image_size", 16)
    h, w = (size, size) if isinstance(size, int) else size
    pixels = torch.randn(3, kwargs.get("num_channels", 3), h, w)
    with torch.no_grad():
        expected = hf(pixels).logits
        got = ours(pixels).logits
    assert expected.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("size", [(24, 24), (20, 12), (8, 8)])
def test_position_interpolation_matches_interpolate_pos_encoding(tmp_path, size):
    hf = _hf_classifier(tmp_path)  # trained grid 4x4
    ours = polyformer.from_pretrained(tmp_path)
    pixels = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = hf(pixels, interpolate_pos_encoding=True).logits
        got = ours(pixels).logits
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=ATOL)
    with pytest.raises(ShapeError, match="interpolate_pos_encoding=True or resize"):
        ours(pixels, interpolate_pos_encoding=False)


def test_live_transformers5_key_names_load_too(tmp_path):
    """A state dict taken from a live transformers 5 model (q_proj/o_proj/mlp.fc1 names) loads the same."""
    hf = _hf_classifier(tmp_path / "disk")
    on_disk, _ = load_state_dict(tmp_path / "disk")
    assert any(".attention.attention.query." in k for k in on_disk)  # what save_pretrained writes
    live = hf.state_dict()
    if not any(".attention.q_proj." in k for k in live):
        pytest.skip("this transformers version names its live modules like its checkpoints")
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "config.json").write_text((tmp_path / "disk" / "config.json").read_text())
    save_state_dict(live, tmp_path / "live" / "model.safetensors")
    a, b = polyformer.from_pretrained(tmp_path / "disk"), polyformer.from_pretrained(tmp_path / "live")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb)


def test_save_pretrained_round_trips_and_transformers_loads_it(tmp_path):
    hf = _hf_classifier(tmp_path / "hf", id2label={0: "cat", 1: "dog", 2: "eel"}, num_labels=3)
    ours = polyformer.from_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["id2label"] == {"0": "cat", "1": "dog", "2": "eel"}
    reloaded = transformers.ViTForImageClassification.from_pretrained(tmp_path / "ours").eval()
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels).logits, hf(pixels).logits, atol=ATOL, rtol=ATOL)
    again = polyformer.from_pretrained(tmp_path / "ours")
    assert again.config.id2label == {0: "cat", 1: "dog", 2: "eel"}
    # the written file uses the on-disk spelling only
    keys, _ = load_state_dict(tmp_path / "ours")
    assert "vit.encoder.layer.1.attention.attention.query.weight" in keys
    assert not any(".q_proj." in k for k in keys)


def test_vit_model_with_pooler_matches(tmp_path):
    config = transformers.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=4, intermediate_size=64)
    hf = _randomise(transformers.ViTModel(config))
    hf.save_pretrained(tmp_path)
    ours = polyformer.from_pretrained(tmp_path)
    assert isinstance(ours, ViTModel) and ours.pooler is not None
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected, got = hf(pixels), ours(pixels)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=ATOL, rtol=ATOL)
    ours.save_pretrained(tmp_path / "again")
    back = transformers.ViTModel.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(pixels).pooler_output, expected.pooler_output, atol=ATOL, rtol=ATOL)


def test_any_mechanism_and_training_step():
    config = ViTConfig(image_size=32, patch_size=4, d_model=32, n_layers=2, n_heads=4, d_ff=64, num_labels=4,
                       attention={"name": "sliding_window", "options": {"window": 8}})
    model = ViTForImageClassification(config)
    assert model.vit.encoder.layers[0].attn.mechanism.name == "sliding_window"
    out = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 3]))
    out.loss.backward()
    assert model.vit.embeddings.position_embeddings.grad.abs().sum() > 0
    dense = ViTForImageClassification(config.with_attention("dense"))
    assert dense.vit.encoder.layers[0].attn.mechanism.name == "dense"


def test_label_map_that_does_not_fit_the_head_is_named(tmp_path):
    _hf_classifier(tmp_path, num_labels=5)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["id2label"] = {"0": "a", "1": "b", "2": "c"}
    raw["label2id"] = {"a": 0, "b": 1, "c": 2}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="classifier.weight has 5 rows .* id2label names 3"):
        polyformer.from_pretrained(tmp_path)
    raw["id2label"] = {"0": "a", "2": "c"}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="id2label must number the classes 0..1"):
        polyformer.from_pretrained(tmp_path)
    raw["id2label"] = {str(i): n for i, n in enumerate("abcde")}
    raw["label2id"] = {"a": 1}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="label2id does not match id2label"):
        polyformer.from_pretrained(tmp_path)


def test_bad_configs_and_inputs():
    with pytest.raises(ConfigError, match="divisible by n_heads"):
        ViTConfig(d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="image_size .* at least patch_size"):
        ViTConfig(image_size=8, patch_size=16)
    model = ViTForImageClassification(ViTConfig(image_size=16, patch_size=4, d_model=16, n_layers=1, n_heads=2, d_ff=32))
    with pytest.raises(ShapeError, match="channels=3"):
        model(torch.randn(1, 1, 16, 16))
    with pytest.raises(ShapeError, match="smaller than one patch"):
        model(torch.randn(1, 3, 2, 16))


def test_config_json_round_trip():
    config = ViTConfig(image_size=(12, 20), patch_size=4, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                       id2label={0: "x", 1: "y"}, attention="bigbird")
    again = ViTConfig.from_hf(json.loads(json.dumps(config.to_hf())))
    assert again == config
