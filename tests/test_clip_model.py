"""CLIP without transformers: configs both ways, the loss and temperature by hand, stretched text
context, and bad input named with its fix."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import polyformer
from polyformer.compose.two_tower import TwoTower
from polyformer.errors import CheckpointError, ConfigError, DataError, ShapeError
from polyformer.layers import resize_positions_1d
from polyformer.models.clip import (
    CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionConfig,
)
from polyformer.models.outputs import BaseModelOutputWithPooling

EOS = 49


def _config(**overrides):
    text = CLIPTextConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_position_embeddings=8,
                          eos_token_id=EOS, projection_dim=24)
    vision = CLIPVisionConfig(d_model=40, n_layers=1, n_heads=4, d_ff=48, image_size=16, patch_size=8, projection_dim=24)
    return CLIPConfig(text, vision, **{"projection_dim": 24, **overrides})


def _batch(n=3, length=6):
    ids = torch.randint(3, 40, (n, length))
    ids[:, -1] = EOS
    return {"input_ids": ids, "attention_mask": torch.ones(n, length, dtype=torch.long),
            "pixel_values": torch.randn(n, 3, 16, 16)}


# -- configs ---------------------------------------------------------------------------------------
def test_config_round_trips_through_hf_names_with_nested_towers():
    config = _config(logit_scale_init_value=3.0).with_attention({"vision": "memory_efficient"})
    raw = config.to_hf("CLIPModel")
    assert raw["model_type"] == "clip" and raw["architectures"] == ["CLIPModel"]
    text, vision = raw["text_config"], raw["vision_config"]
    assert text["model_type"] == "clip_text_model" and vision["model_type"] == "clip_vision_model"
    assert (text["hidden_size"], text["max_position_embeddings"], text["eos_token_id"], text["hidden_act"]) == (
        32, 8, EOS, "quick_gelu")
    assert (vision["image_size"], vision["patch_size"], vision["num_channels"], vision["layer_norm_eps"]) == (16, 8, 3, 1e-5)
    assert vision["polyformer"] == {"attention": {"name": "memory_efficient", "options": {}}} and "polyformer" not in text
    assert CLIPConfig.from_hf(raw) == config


def test_defaults_are_transformers_defaults():
    pytest.importorskip("transformers")
    import transformers

    ours, theirs = CLIPConfig().to_hf(), transformers.CLIPConfig().to_dict()
    for key in ("projection_dim", "logit_scale_init_value"):
        assert ours[key] == theirs[key]
    for tower in ("text_config", "vision_config"):
        for key, value in ours[tower].items():
            if key in theirs[tower] and key != "polyformer":
                assert theirs[tower][key] == value, (tower, key)


def test_old_config_spellings_and_a_text_config_read_from_a_whole_clip_config():
    raw = _config().to_hf()
    del raw["text_config"]["model_type"]  # old transformers left nested model types out
    raw["vision_config_dict"] = {"patch_size": 4}  # and wrote *_config_dict, which wins
    config = CLIPConfig.from_hf(raw)
    assert config.text_config.d_model == 32 and config.vision_config.patch_size == 4
    assert CLIPTextConfig.from_hf(raw).max_position_embeddings == 8
    assert CLIPVisionConfig.from_hf({**raw["vision_config"], "image_size": [16, 16]}).image_size == 16


@pytest.mark.parametrize("bad, match", [
    (dict(text=dict(eos_token_id=50)), "eos_token_id must be a token id"),
    (dict(text=dict(d_model=30)), "divisible by n_heads"),
    (dict(text=dict(activation="swishy")), "activation must be one of"),
    (dict(vision=dict(image_size=4)), "at least patch_size"),
    (dict(vision=dict(image_size=[16, 8])), "must be square"),
])
def test_bad_config_values_are_named(bad, match):
    text = dict(vocab_size=50, d_model=32, n_heads=4, eos_token_id=EOS)
    vision = dict(image_size=16, patch_size=8)
    with pytest.raises(ConfigError, match=match):
        CLIPConfig({**text, **bad.get("text", {})}, {**vision, **bad.get("vision", {})})


def test_bad_config_json_is_a_checkpoint_error_naming_the_file(tmp_path):
    model = CLIPModel(_config())
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(path.read_text().replace('"hidden_act": "quick_gelu"', '"hidden_act": "swishy"', 1))
    with pytest.raises(CheckpointError, match="config.json.*activation must be one of"):
        polyformer.from_pretrained(tmp_path)


# -- the contrastive head ---------------------------------------------------------------------------
def test_logits_embeddings_and_loss_equal_a_hand_computation():
    model = CLIPModel(_config()).eval()
    batch = _batch()
    out = model(**batch, return_loss=True)
    with torch.no_grad():
        text = model.text_model(batch["input_ids"]).pooler_output @ model.text_projection.weight.t()
        image = model.vision_model(batch["pixel_values"]).pooler_output @ model.visual_projection.weight.t()
    text, image = text / text.norm(dim=-1, keepdim=True), image / image.norm(dim=-1, keepdim=True)
    logits = math.exp(model.logit_scale.item()) * image @ text.t()
    torch.testing.assert_close(out.logits_per_image, logits)
    torch.testing.assert_close(out.logits_per_text, logits.t())
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(3))
    # symmetric cross-entropy, written out: -log softmax at the diagonal, over rows and over columns
    rows = -(logits.diag() - logits.logsumexp(dim=1)).mean()
    cols = -(logits.diag() - logits.logsumexp(dim=0)).mean()
    torch.testing.assert_close(out.loss, (rows + cols) / 2)
    assert model(**batch).loss is None
    features = model.get_text_features(batch["input_ids"]).pooler_output
    torch.testing.assert_close(F.normalize(features, dim=-1), out.text_embeds)


def test_logit_scale_is_clamped_at_100_in_the_forward_and_when_asked():
    model = CLIPModel(_config()).eval()
    assert model.logit_scale.item() == pytest.approx(2.6592)  # ln(1/0.07), transformers' default
    with torch.no_grad():
        model.logit_scale.fill_(6.0)  # exp(6) = 403 would be the unclamped temperature
    out = model(**_batch())
    torch.testing.assert_close(out.logits_per_image, 100.0 * out.image_embeds @ out.text_embeds.t())
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))


def test_two_tower_keeps_a_towers_whole_output_when_it_has_a_pooler_output():
    class Tower(nn.Module):
        def forward(self, x):
            return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=x.mean(1))

    pair = TwoTower(Tower(), Tower(), 4, 4, 3)
    out = pair(torch.randn(2, 5, 4), torch.randn(2, 7, 4))
    assert out.outputs_a.last_hidden_state.shape == (2, 5, 4) and out.outputs_b.last_hidden_state.shape == (2, 7, 4)
    torch.testing.assert_close(out.features_a, out.outputs_a.pooler_output)
    plain = TwoTower(nn.Identity(), nn.Identity(), 4, 4, 3)(torch.randn(2, 4), torch.randn(2, 4))
    assert plain.outputs_a is None and plain.outputs_b is None


def test_end_of_text_may_be_a_list_of_ids():
    config = CLIPTextConfig(vocab_size=50, d_model=32, n_layers=1, n_heads=4, d_ff=48, max_position_embeddings=8,
                            eos_token_id=[47, EOS])
    model = CLIPTextModel(config).eval()
    ids = torch.tensor([[5, 6, 47, 9], [5, EOS, 8, 47]])
    assert model.text_model.end_of_text(ids).tolist() == [2, 1]
    out = model(ids)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[[0, 1], [2, 1]])


# -- stretched context -----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [CLIPModel, CLIPTextModelWithProjection])
def test_stretch_text_context_interpolates_the_table_and_updates_the_config(tmp_path, cls):
    config = _config() if cls is CLIPModel else _config().text_config
    model = cls(config).eval()
    table = model.text_model.embeddings.position_embedding.weight.detach().clone()
    long_ids = torch.randint(3, 40, (2, 12))
    long_ids[:, -1] = EOS
    call = (lambda ids: model.get_text_features(ids)) if cls is CLIPModel else model
    with pytest.raises(ShapeError, match=r"12 tokens exceed .* 8 positions .*truncation=True.*stretch_text_context\(12\)"):
        call(long_ids)
    model.stretch_text_context(12)
    text_config = model.config.text_config if cls is CLIPModel else model.config
    assert text_config.max_position_embeddings == 12
    stretched = model.text_model.embeddings.position_embedding.weight
    assert stretched.requires_grad and stretched.shape == (12, 32)
    torch.testing.assert_close(stretched, resize_positions_1d(table, 12))
    # linear interpolation with cell centres aligned: the first and last rows are kept
    torch.testing.assert_close(stretched[[0, -1]], table[[0, -1]])
    call(long_ids)  # now runs
    model.save_pretrained(tmp_path)
    again = polyformer.from_pretrained(tmp_path)
    assert (again.config.text_config if cls is CLIPModel else again.config).max_position_embeddings == 12
    with pytest.raises(ConfigError, match="positive integer"):
        model.stretch_text_context(0)


# -- bad input -------------------------------------------------------------------------------------
def test_bad_inputs_are_named_with_their_fix():
    model = CLIPModel(_config()).eval()
    batch = _batch()
    with pytest.raises(ShapeError, match="return_loss pairs image i with text i.*3 images and 2 texts"):
        model(**{**batch, "input_ids": batch["input_ids"][:2], "attention_mask": None}, return_loss=True)
    assert model(**{**batch, "input_ids": batch["input_ids"][:2], "attention_mask": None}).logits_per_image.shape == (3, 2)
    with pytest.raises(ShapeError, match="channels=3.*CLIPImageProcessor.*grayscale"):
        model(**{**batch, "pixel_values": torch.randn(3, 1, 16, 16)})
    with pytest.raises(ShapeError, match="normalised floats"):
        model(**{**batch, "pixel_values": torch.zeros(3, 3, 16, 16, dtype=torch.uint8)})
    with pytest.raises(ShapeError, match="24x24 image does not match the model's 16x16.*interpolate_pos_encoding=True"):
        model(**{**batch, "pixel_values": torch.randn(3, 3, 24, 24)})
    assert model(**{**batch, "pixel_values": torch.randn(3, 3, 24, 24)}, interpolate_pos_encoding=True).loss is None
    no_eos = batch["input_ids"].clone()
    no_eos[1, -1] = 7
    with pytest.raises(DataError, match=r"row\(s\) \[1\] have no end-of-text token \(id 49\)"):
        model(**{**batch, "input_ids": no_eos})
    with pytest.raises(ShapeError, match="attention_mask must be"):
        model(**{**batch, "attention_mask": torch.ones(3, 5)})
    with pytest.raises(ConfigError, match="needs both input_ids and pixel_values.*get_image_features"):
        model(pixel_values=batch["pixel_values"])


def test_module_docstring_example_holds():
    import doctest

    from polyformer.models import clip

    result = doctest.testmod(clip)
    assert result.attempted > 0 and result.failed == 0
