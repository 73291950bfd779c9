"""TimeSformer: config round trip, space-only against per-frame ViT, initialisation from ViT, bad input.

Parity with ``transformers`` is in test_timesformer_hf_parity.py; mechanisms in
test_timesformer_mechanisms.py.
"""

import pytest
import torch
from torch import nn

import polyformer
from polyformer.errors import CheckpointError, ConfigError, ShapeError
from polyformer.layers import FactorisedAttention, MultiHeadAttention
from polyformer.models.timesformer import TimesformerConfig, TimesformerForVideoClassification
from polyformer.models.vit import ViTConfig, ViTForImageClassification, ViTModel
from polyformer.transformer import Encoder, TransformerConfig
from _random_weights import randomise

SIZES = dict(image_size=16, patch_size=4, d_model=24, n_layers=2, n_heads=3, d_ff=40)


def _model(attention_type="divided_space_time", num_frames=3, **kw):
    config = TimesformerConfig(**{**SIZES, **kw}, num_frames=num_frames, attention_type=attention_type, num_labels=5)
    return TimesformerForVideoClassification(config).eval()


def test_config_round_trips_through_config_json():
    config = TimesformerConfig(**SIZES, num_frames=6, qkv_bias=False, drop_path=0.1, activation="relu",
                               time_attention="linear", num_labels=2)
    raw = config.to_hf("TimesformerForVideoClassification")
    assert raw["model_type"] == "timesformer" and raw["num_frames"] == 6 and raw["drop_path_rate"] == 0.1
    assert raw["attention_type"] == "divided_space_time" and raw["image_size"] == 16 and raw["layer_norm_eps"] == 1e-6
    assert raw["polyformer"] == {"time_attention": {"name": "linear", "options": {}}}
    assert TimesformerConfig.from_hf(raw) == config
    swapped = config.with_attention("performer")
    assert swapped.attention.name == "performer" and swapped.time_attention is None
    with pytest.raises(ConfigError, match="attention_type must be one of divided_space_time"):
        TimesformerConfig(**SIZES, attention_type="divided")
    with pytest.raises(ConfigError, match="time_attention applies to divided_space_time only"):
        TimesformerConfig(**SIZES, attention_type="joint_space_time", time_attention="linear")
    with pytest.raises(CheckpointError, match="config.json.*num_frames must be a positive integer"):
        TimesformerConfig.from_hf({**raw, "num_frames": 0})


def test_fresh_model_starts_with_zero_temporal_projection_and_time_table():
    model = _model()
    emb = model.timesformer.embeddings
    assert torch.count_nonzero(emb.time_embeddings) == 0 and emb.position_embeddings.std() > 0
    for block in model.timesformer.encoder.layers:
        assert torch.count_nonzero(block.time_proj.weight) == 0 and torch.count_nonzero(block.time_proj.bias) == 0
        assert block.time_attn.q_proj.weight.std() > 0


def _vit_from(model):
    """A ViT holding the spatial weights of a space-only TimeSformer (names mapped by hand)."""
    c = model.config
    vit = ViTForImageClassification(ViTConfig(**SIZES, num_labels=5, norm_eps=c.norm_eps)).eval()
    state = {k.replace("timesformer.", "vit."): v for k, v in model.state_dict().items()}
    vit.load_state_dict(state)
    return vit


def test_space_only_is_the_mean_over_frames_of_a_per_frame_vit():
    model = randomise(_model("space_only", num_frames=4))
    vit = _vit_from(model)
    x = torch.randn(2, 4, 3, 16, 16)
    with torch.no_grad():
        per_frame = vit(x.flatten(0, 1)).logits.view(2, 4, -1)  # ViT on each frame alone
        out = model(x, output_hidden_states=True)
    torch.testing.assert_close(out.logits, per_frame.mean(1), atol=1e-5, rtol=0)
    assert out.hidden_states[0].shape == (8, 17, 24)  # hidden states stay per frame, as transformers'
    labels = torch.tensor([0, 4])
    torch.testing.assert_close(model(x, labels=labels).loss, nn.functional.cross_entropy(per_frame.mean(1), labels))


@pytest.mark.parametrize("vit_class", [ViTForImageClassification, ViTModel])
def test_from_vit_reads_every_frame_as_vit_until_trained(vit_class, tmp_path):
    vit = randomise(vit_class(ViTConfig(**SIZES, num_labels=7)), seed=2)
    vit.save_pretrained(tmp_path)
    backbone = getattr(vit, "vit", vit)
    model = TimesformerForVideoClassification.from_vit(tmp_path, num_frames=3, num_labels=4).eval()
    assert model.config.num_frames == 3 and model.config.num_labels == 4 and model.config.norm_eps == 1e-12
    frame = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = backbone.encoder(backbone.embeddings(frame))  # (B, 1 + S, d)
        one = model.timesformer(frame[:, None]).last_hidden_state  # a one-frame video
        same = model.timesformer(frame[:, None].expand(-1, 3, -1, -1, -1)).last_hidden_state
    torch.testing.assert_close(one, ref, atol=1e-5, rtol=0)
    # three identical frames: the class token and each frame's patches are ViT's (position-major layout)
    torch.testing.assert_close(same[:, 0], ref[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(same[:, 1:].view(2, 16, 3, 24), ref[:, 1:, None].expand(-1, -1, 3, -1),
                               atol=1e-5, rtol=0)
    block, vit_block = model.timesformer.encoder.layers[1], backbone.encoder.layers[1]
    torch.testing.assert_close(block.time_attn.v_proj.weight, vit_block.attn.v_proj.weight)
    assert torch.count_nonzero(block.time_proj.weight) == 0
    with pytest.raises(ConfigError, match="not a ViT"):
        TimesformerForVideoClassification.from_vit(_saved_timesformer(tmp_path / "ts"))


def _saved_timesformer(path):
    _model().save_pretrained(path)
    return path


@pytest.mark.parametrize("attention_type", ["divided_space_time", "joint_space_time"])
def test_time_matters_and_a_frame_count_change_is_interpolated(attention_type):
    model = randomise(_model(attention_type, num_frames=4))
    x = torch.randn(1, 4, 3, 16, 16)
    with torch.no_grad():
        forward = model(x).logits
        backward = model(x.flip(1)).logits  # frames reversed: time positions and temporal attention see it
        longer = model(torch.randn(1, 7, 3, 16, 16)).logits
    assert (forward - backward).abs().max() > 1e-3
    assert longer.shape == (1, 5) and torch.isfinite(longer).all()


def test_drop_path_is_off_in_eval_and_on_in_training():
    model = randomise(_model(drop_path=0.5))
    x = torch.randn(4, 3, 3, 16, 16)
    with torch.no_grad():
        a, b = model(x).logits, model(x).logits
        model.train()
        torch.manual_seed(1)
        c = model(x).logits
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert (a - c).abs().max() > 1e-3


def test_attention_override_reaches_both_axes(tmp_path):
    _model().save_pretrained(tmp_path)
    model = polyformer.from_pretrained(tmp_path, attention="linear")
    block = model.timesformer.encoder.layers[0]
    assert block.attn.mechanism.name == "linear" and block.time_attn.mechanism.name == "linear"
    mixed = _model(time_attention="performer").timesformer.encoder.layers[0]
    assert mixed.attn.mechanism.name == "dense" and mixed.time_attn.mechanism.name == "performer"


@pytest.mark.parametrize("attention_type", ["divided_space_time", "joint_space_time", "space_only"])
def test_bad_videos_raise_named_errors(attention_type):
    model = _model(attention_type)
    with pytest.raises(ShapeError, match=r"\(batch, frames, channels=3, height, width\).*pixel_values\[None\]"):
        model(torch.randn(3, 3, 16, 16))
    with pytest.raises(ShapeError, match=r"has no frames"):
        model(torch.randn(2, 0, 3, 16, 16))
    with pytest.raises(ShapeError, match=r"3 channels.*transpose\(1, 2\)"):
        model(torch.randn(2, 3, 5, 16, 16))  # (batch, channels, frames, ...) by mistake
    with pytest.raises(ShapeError, match=r"3 channels"):
        model(torch.randn(2, 4, 1, 16, 16))  # grayscale frames for an RGB model
    with pytest.raises(ShapeError, match="smaller than one patch"):
        model(torch.randn(2, 3, 3, 2, 16))


def test_divided_block_refuses_what_it_does_not_take():
    block = _model().timesformer.encoder.layers[0]
    with pytest.raises(ConfigError, match="take no key_padding_mask"):
        block(torch.randn(1, 1 + 16 * 3, 24), num_frames=3, key_padding_mask=torch.ones(1, 49, dtype=torch.bool))


def test_encoder_passes_layer_kwargs_to_every_layer():
    seen = []

    class Scale(nn.Module):
        def forward(self, x, *, factor, **protocol):
            seen.append(factor)
            return x * factor

    config = TransformerConfig(d_model=8, n_heads=2, n_layers=3, final_norm=False)
    encoder = Encoder(config, block_fn=lambda c, i: Scale())
    x = torch.randn(2, 5, 8)
    out = encoder.run(x, layer_kwargs={"factor": 2.0}, output_hidden_states=True)
    assert seen == [2.0, 2.0, 2.0]
    torch.testing.assert_close(out.last_hidden_state, x * 8)


@pytest.mark.parametrize("axis", ["time", "space"])
def test_factorised_attention_returns_the_probabilities_of_each_sequence(axis):
    layer = FactorisedAttention(16, 2, axis=axis).eval()
    plain = MultiHeadAttention(16, 2).eval()
    plain.load_state_dict(layer.state_dict())
    x, cls = torch.randn(2, 3, 5, 16), torch.randn(2, 1, 16)
    out, cls_out, probs = layer(x, cls if axis == "space" else None, output_attentions=True)
    if axis == "time":
        seqs = x.transpose(1, 2).reshape(10, 3, 16)
    else:
        seqs = torch.cat([cls.expand(2, 3, 16).reshape(6, 1, 16), x.reshape(6, 5, 16)], dim=1)
    _, ref = plain(seqs, output_attentions=True)
    torch.testing.assert_close(probs, ref)
    torch.testing.assert_close(out, layer(x, cls if axis == "space" else None)[0])


def test_module_example_runs():
    import doctest

    from polyformer.models import timesformer

    result = doctest.testmod(timesformer)
    assert result.attempted > 0 and result.failed == 0
