"""TimeSformer: tiny random Hugging Face models of several configs, loaded by the production path.

Each model is saved by ``transformers`` and read back with ``polyformer.from_pretrained(folder)``;
logits, hidden states and attentions must match within 1e-4 (fp32), and what polyformer saves must
load in ``transformers`` with the same outputs. ``space_only`` is compared as the mean of
``transformers``' per-frame logits (ours returns one prediction per video).
"""

import json

import pytest
import torch

import polyformer
from polyformer.models.timesformer import TimesformerForVideoClassification, TimesformerModel
from _random_weights import randomise

transformers = pytest.importorskip("transformers")
ATOL = 1e-4
CONFIGS = {
    "divided": dict(attention_type="divided_space_time", image_size=16, patch_size=8, num_frames=3,
                    hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40),
    "divided-nobias-relu": dict(attention_type="divided_space_time", image_size=24, patch_size=8, num_frames=2,
                                hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                                qkv_bias=False, hidden_act="relu", layer_norm_eps=1e-5),
    "joint": dict(attention_type="joint_space_time", image_size=16, patch_size=4, num_frames=4,
                  hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=30),
    "joint-nobias-gelu_new": dict(attention_type="joint_space_time", image_size=12, patch_size=6, num_frames=5,
                                  hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=20,
                                  qkv_bias=False, hidden_act="gelu_new"),
    "space_only": dict(attention_type="space_only", image_size=16, patch_size=8, num_frames=3,
                       hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40),
}


def _hf_model(name, cls="TimesformerForVideoClassification", num_labels=4, seed=0):
    config = transformers.TimesformerConfig(**CONFIGS[name], num_labels=num_labels)
    torch.manual_seed(seed)
    return randomise(getattr(transformers, cls)(config), seed=seed)


def _video(config, batch=2, frames=None, size=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    side = size or config.image_size
    return torch.randn(batch, frames or config.num_frames, config.num_channels, side, side, generator=g)


def _close(ours, theirs):
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def _compare(ours, hf, x, space_only=False):
    with torch.no_grad():
        a = hf(x, output_hidden_states=True, output_attentions=True)
        b = ours(x, output_hidden_states=True, output_attentions=True)
    if hasattr(a, "logits"):
        logits = a.logits.view(x.shape[0], x.shape[1], -1).mean(1) if space_only else a.logits
        _close(b.logits, logits)
    else:
        _close(b.last_hidden_state, a.last_hidden_state)
    assert len(b.hidden_states) == len(a.hidden_states) and len(b.attentions) == len(a.attentions)
    for p, q in zip(b.hidden_states + b.attentions, a.hidden_states + a.attentions):
        _close(p, q)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_classifier_matches_transformers_both_ways(name, tmp_path):
    hf = _hf_model(name)
    hf.save_pretrained(tmp_path / "hf")
    ours = polyformer.from_pretrained(tmp_path / "hf")
    assert isinstance(ours, TimesformerForVideoClassification)
    assert ours.config.attention_type == CONFIGS[name]["attention_type"]
    x = _video(hf.config)
    space_only = name == "space_only"
    _compare(ours, hf, x, space_only)
    # the loss is the core's classification loss, as transformers computes it
    labels = torch.tensor([1, 3])
    with torch.no_grad():
        _close(ours(x, labels=labels).loss, hf(x, labels=labels).loss if not space_only else
               torch.nn.functional.cross_entropy(ours(x).logits, labels))
    # ours saved -> transformers loads it with the same outputs
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.TimesformerForVideoClassification.from_pretrained(tmp_path / "ours").eval()
    _compare(ours, back, x, space_only)


@pytest.mark.parametrize("name", ["divided", "joint"])
def test_bare_model_matches_transformers_both_ways(name, tmp_path):
    hf = _hf_model(name, "TimesformerModel", seed=3)
    hf.save_pretrained(tmp_path / "hf")
    ours = polyformer.from_pretrained(tmp_path / "hf")
    assert isinstance(ours, TimesformerModel)
    _compare(ours, hf, _video(hf.config))
    ours.save_pretrained(tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["architectures"] == ["TimesformerModel"]
    back = transformers.TimesformerModel.from_pretrained(tmp_path / "ours").eval()
    _compare(ours, back, _video(hf.config, seed=5))


@pytest.mark.parametrize("frames,size", [(6, 16), (2, 24), (3, 8)])
def test_joint_interpolates_positions_as_transformers(frames, size, tmp_path):
    # transformers' joint blocks do not depend on the config's sizes, so its embeddings' nearest
    # interpolation of the space and time tables is the reference
    hf = _hf_model("joint")
    hf.save_pretrained(tmp_path)
    ours = polyformer.from_pretrained(tmp_path)
    _compare(ours, hf, _video(hf.config, frames=frames, size=size))


@pytest.mark.parametrize("frames,size", [(5, 16), (3, 24), (2, 32)])
def test_divided_interpolates_positions_like_a_model_built_for_the_new_size(frames, size, tmp_path):
    # transformers' divided blocks reshape by the config's frame count and grid, so the reference is
    # a transformers model built for the new sizes holding the nearest-resized tables
    hf = _hf_model("divided")
    hf.save_pretrained(tmp_path)
    ours = polyformer.from_pretrained(tmp_path)
    ref = transformers.TimesformerForVideoClassification(
        transformers.TimesformerConfig(**{**CONFIGS["divided"], "num_frames": frames, "image_size": size},
                                       num_labels=4)).eval()
    state = hf.state_dict()
    emb = "timesformer.embeddings."
    time = state[emb + "time_embeddings"]  # (1, T, d)
    state[emb + "time_embeddings"] = torch.nn.functional.interpolate(
        time.transpose(1, 2), size=frames, mode="nearest").transpose(1, 2)
    pos = state[emb + "position_embeddings"]  # (1, 1 + g*g, d)
    old, new, d = 16 // 8, size // 8, pos.shape[-1]
    grid = pos[0, 1:].reshape(old, old, d).permute(2, 0, 1)[None]
    grid = torch.nn.functional.interpolate(grid, size=(new, new), mode="nearest")[0].permute(1, 2, 0).reshape(-1, d)
    state[emb + "position_embeddings"] = torch.cat([pos[:, :1], grid[None]], dim=1)
    ref.load_state_dict(state)
    _compare(ours, ref, _video(hf.config, frames=frames, size=size))
