"""CLIP: tiny random Hugging Face models of several configs, every class, loaded by the production path.

Each model is saved by ``transformers`` and read back with ``polyformer.from_pretrained(folder)``;
outputs must match within 1e-4 (fp32), and what polyformer saves must load in ``transformers`` with
the same outputs.
"""

import json

import pytest
import torch

import polyformer
from polyformer.convert import load_state_dict, save_state_dict
from polyformer.errors import CheckpointError
from _random_weights import randomise

transformers = pytest.importorskip("transformers")
ATOL = 1e-4
VOCAB, EOS, PAD, N = 99, 98, 1, 9
CLASSES = ["CLIPModel", "CLIPTextModel", "CLIPVisionModel", "CLIPTextModelWithProjection",
           "CLIPVisionModelWithProjection"]
CONFIGS = {
    # text and vision of different widths and depths, projection_dim unlike both, a modern end-of-text id
    "quick_gelu-eos98": dict(
        text=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37),
        vision=dict(hidden_size=40, num_hidden_layers=3, num_attention_heads=5, intermediate_size=50),
        projection_dim=20,
    ),
    # an old config: eos_token_id 2 selects "pool at the largest id"; gelu; other norm eps
    "gelu-legacy-eos2": dict(
        text=dict(hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=40, hidden_act="gelu",
                  eos_token_id=2, layer_norm_eps=1e-6),
        vision=dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=30, hidden_act="gelu",
                    patch_size=4, image_size=16, layer_norm_eps=1e-6),
        projection_dim=16,
    ),
    # one tower of each activation, one channel, wider vision than text
    "mixed-acts-grey": dict(
        text=dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=36, hidden_act="gelu"),
        vision=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=72, num_channels=1),
        projection_dim=40,
    ),
}


def _text_config(spec):
    defaults = dict(vocab_size=VOCAB, max_position_embeddings=16, eos_token_id=EOS, bos_token_id=97, pad_token_id=PAD,
                    projection_dim=spec["projection_dim"])
    return {**defaults, **spec["text"]}


def _vision_config(spec):
    return {**dict(image_size=32, patch_size=8, projection_dim=spec["projection_dim"]), **spec["vision"]}


def _hf_model(architecture, spec, **extra):
    """A random transformers model of ``architecture`` for config ``spec`` (eval mode)."""
    if architecture == "CLIPModel":
        config = transformers.CLIPConfig(text_config=_text_config(spec), vision_config=_vision_config(spec),
                                         projection_dim=spec["projection_dim"], **extra)
    elif "Text" in architecture:
        config = transformers.CLIPTextConfig(**_text_config(spec), **extra)
    else:
        config = transformers.CLIPVisionConfig(**_vision_config(spec), **extra)
    return randomise(getattr(transformers, architecture)(config), seed=0)


def _save_hf(folder, architecture, spec, **extra):
    hf = _hf_model(architecture, spec, **extra)
    hf.save_pretrained(folder)
    return hf


def _texts(batch=3):
    """Row 0 fills the length and ends in end-of-text; row 1 is padded with the end-of-text id (as
    OpenAI's tokenizer pads) and row 2 with the pad id; both padded rows are masked."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, EOS - 1, (batch, N), generator=g)
    mask = torch.ones(batch, N, dtype=torch.long)
    ids[0, -1] = EOS
    ids[1, 5:] = EOS
    mask[1, 6:] = 0
    ids[2, 3], ids[2, 4:] = EOS, PAD
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _images(spec, batch=3, size=None):
    vision = _vision_config(spec)
    side = size or vision["image_size"]
    g = torch.Generator().manual_seed(2)
    return {"pixel_values": torch.randn(batch, vision.get("num_channels", 3), side, side, generator=g)}


def _inputs(architecture, spec):
    if architecture == "CLIPModel":
        return {**_texts(), **_images(spec)}
    return _texts() if "Text" in architecture else _images(spec)


FIELDS = {
    "CLIPModel": ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds",
                  "text_model_output.last_hidden_state", "text_model_output.pooler_output",
                  "vision_model_output.last_hidden_state", "vision_model_output.pooler_output"),
    "CLIPTextModel": ("last_hidden_state", "pooler_output"),
    "CLIPVisionModel": ("last_hidden_state", "pooler_output"),
    "CLIPTextModelWithProjection": ("text_embeds", "last_hidden_state"),
    "CLIPVisionModelWithProjection": ("image_embeds", "last_hidden_state"),
}


def _field(out, name):
    for part in name.split("."):
        out = getattr(out, part)
    return out


def _assert_same(ours, theirs, fields):
    for name in fields:
        expected, got = _field(theirs, name), _field(ours, name)
        assert expected.abs().max() > 0.1, name  # not a comparison of two near-zero tensors
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=ATOL, msg=name)


@pytest.mark.parametrize("architecture", CLASSES)
@pytest.mark.parametrize("spec", CONFIGS.values(), ids=CONFIGS.keys())
def test_every_class_matches_transformers(tmp_path, architecture, spec):
    hf = _save_hf(tmp_path, architecture, spec)
    ours = polyformer.from_pretrained(tmp_path)
    assert type(ours).__name__ == architecture and not ours.training
    inputs = _inputs(architecture, spec)
    with torch.no_grad():
        _assert_same(ours(**inputs), hf(**inputs), FIELDS[architecture])


def test_pooling_follows_the_end_of_text_rule_of_each_config(tmp_path):
    """Modern configs pool at the first ``eos_token_id``; legacy ones (``eos_token_id`` 2) at the
    largest id, which lands elsewhere once a token with a larger id (an added token) is in the text."""
    ids = torch.tensor([[5, 95, 7, 90, 90, 90], [5, 6, 90, 95, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]])
    spec = CONFIGS["quick_gelu-eos98"]
    for eos, where in ((90, [3, 2]), (2, [1, 3])):
        folder = tmp_path / str(eos)
        hf = _save_hf(folder, "CLIPTextModel", {**spec, "text": {**spec["text"], "eos_token_id": eos}})
        ours = polyformer.from_pretrained(folder)
        assert ours.text_model.end_of_text(ids).tolist() == where
        with torch.no_grad():
            got, expected = ours(input_ids=ids, attention_mask=mask), hf(input_ids=ids, attention_mask=mask)
        _assert_same(got, expected, FIELDS["CLIPTextModel"])
        torch.testing.assert_close(got.pooler_output, got.last_hidden_state[[0, 1], where])


def test_contrastive_loss_matches_transformers(tmp_path):
    spec = CONFIGS["quick_gelu-eos98"]
    hf = _save_hf(tmp_path, "CLIPModel", spec)
    ours = polyformer.from_pretrained(tmp_path)
    inputs = _inputs("CLIPModel", spec)
    with torch.no_grad():
        got, expected = ours(**inputs, return_loss=True).loss, hf(**inputs, return_loss=True).loss
    assert expected > 0.1
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=ATOL)


def test_features_position_ids_and_interpolated_positions_match(tmp_path):
    spec = CONFIGS["quick_gelu-eos98"]
    hf = _save_hf(tmp_path, "CLIPModel", spec)
    ours = polyformer.from_pretrained(tmp_path)
    texts, images = _texts(), _images(spec)
    positions = torch.arange(2, 2 + N).expand(3, N)
    big = _images(spec, size=48)  # a 6x6 grid for a model trained on 4x4
    with torch.no_grad():
        _assert_same(ours.get_text_features(**texts), hf.get_text_features(**texts), ("pooler_output",))
        _assert_same(ours.get_image_features(**images), hf.get_image_features(**images), ("pooler_output",))
        args = {**texts, "position_ids": positions}
        _assert_same(ours.get_text_features(**args), hf.get_text_features(**args), ("pooler_output",))
        args = {**texts, **big, "interpolate_pos_encoding": True}
        _assert_same(ours(**args), hf(**args), FIELDS["CLIPModel"])
    vision = _save_hf(tmp_path / "vision", "CLIPVisionModel", spec)
    ours = polyformer.from_pretrained(tmp_path / "vision")
    wide = {"pixel_values": torch.randn(2, 3, 32, 56), "interpolate_pos_encoding": True}  # a 4x7 grid
    with torch.no_grad():
        _assert_same(ours(**wide), vision(**wide), FIELDS["CLIPVisionModel"])


@pytest.mark.parametrize("architecture", ["CLIPModel", "CLIPTextModelWithProjection", "CLIPVisionModel"])
def test_hidden_states_and_attentions_of_every_layer_match(tmp_path, architecture):
    spec = CONFIGS["quick_gelu-eos98"]
    hf = _save_hf(tmp_path, architecture, spec, attn_implementation="eager")
    ours = polyformer.from_pretrained(tmp_path)
    inputs = _inputs(architecture, spec)
    with torch.no_grad():
        expected = hf(**inputs, output_hidden_states=True, output_attentions=True)
        got = ours(**inputs, output_hidden_states=True, output_attentions=True)
    pairs = [(got, expected)]
    if architecture == "CLIPModel":
        pairs = [(got.text_model_output, expected.text_model_output),
                 (got.vision_model_output, expected.vision_model_output)]
    for mine, theirs in pairs:
        assert len(mine.hidden_states) == len(theirs.hidden_states) == len(theirs.attentions) + 1
        for a, b in zip(mine.hidden_states + mine.attentions, theirs.hidden_states + theirs.attentions):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("architecture", CLASSES)
def test_save_pretrained_loads_in_transformers_with_same_outputs(tmp_path, architecture):
    spec = CONFIGS["gelu-legacy-eos2"]
    hf = _save_hf(tmp_path / "hf", architecture, spec)
    ours = polyformer.from_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "ours")
    back = getattr(transformers, architecture).from_pretrained(tmp_path / "ours").eval()
    inputs = _inputs(architecture, spec)
    with torch.no_grad():
        _assert_same(back(**inputs), hf(**inputs), FIELDS[architecture])
        again = polyformer.from_pretrained(tmp_path / "ours")
        _assert_same(again(**inputs), hf(**inputs), FIELDS[architecture])
    written = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert written["architectures"] == [architecture]
    text = written.get("text_config", written) if architecture != "CLIPVisionModel" else None
    if architecture == "CLIPModel":
        assert written["projection_dim"] == 16 and written["logit_scale_init_value"] == pytest.approx(2.6592)
        assert back.config.vision_config.patch_size == 4 and back.config.text_config.eos_token_id == 2
    if text is not None and "Vision" not in architecture:
        assert text["eos_token_id"] == 2 and text["hidden_act"] == "gelu" and text["layer_norm_eps"] == 1e-6


def test_transformers4_spelling_with_position_id_buffers_loads(tmp_path):
    """transformers 4 saved a bare text/vision model under its tower prefix, with position-id buffers."""
    spec = CONFIGS["quick_gelu-eos98"]
    for architecture, prefix in (("CLIPTextModel", "text_model."), ("CLIPVisionModel", "vision_model.")):
        folder = tmp_path / architecture
        hf = _save_hf(folder, architecture, spec)
        state, _ = load_state_dict(folder)
        assert not any(k.startswith(prefix) for k in state)  # transformers 5 writes no prefix
        state = {prefix + k: v for k, v in state.items()}
        state[prefix + "embeddings.position_ids"] = torch.arange(17)[None]
        save_state_dict(state, folder / "model.safetensors")
        ours = polyformer.from_pretrained(folder)
        inputs = _inputs(architecture, spec)
        with torch.no_grad():
            _assert_same(ours(**inputs), hf(**inputs), FIELDS[architecture])


def test_loading_names_missing_unexpected_and_misshaped_weights(tmp_path):
    spec = CONFIGS["quick_gelu-eos98"]
    _save_hf(tmp_path, "CLIPModel", spec)
    state, _ = load_state_dict(tmp_path)
    broken = dict(state)
    del broken["text_model.encoder.layers.1.mlp.fc2.weight"]
    broken["vision_model.encoder.layers.9.mlp.fc1.weight"] = torch.zeros(2, 2)
    broken["visual_projection.weight"] = torch.zeros(20, 41)
    save_state_dict(broken, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        polyformer.from_pretrained(tmp_path)
    message = str(error.value)
    assert "missing weights: two_tower.tower_b.decoder.layers.1.mlp.fc_out.weight" in message
    assert "two_tower.tower_a.encoder.layers.9.mlp.fc_in.weight" in message  # unexpected
    assert "two_tower.proj_a.weight (checkpoint (20, 41), model (20, 40))" in message


def test_transformers_configs_read_with_their_names(tmp_path):
    spec = CONFIGS["mixed-acts-grey"]
    _save_hf(tmp_path, "CLIPModel", spec)
    config = polyformer.from_pretrained(tmp_path).config
    text, vision = config.text_config, config.vision_config
    assert (config.projection_dim, text.d_model, text.n_layers, text.n_heads, text.d_ff) == (40, 24, 2, 2, 36)
    assert (text.activation, vision.activation, vision.num_channels) == ("gelu", "quick_gelu", 1)
    assert (text.max_position_embeddings, text.eos_token_id, vision.image_size, vision.patch_size) == (16, EOS, 32, 8)


# -- one tower from a whole CLIPModel folder -----------------------------------------------------------
TOWER_CLASSES = CLASSES[1:]


@pytest.mark.parametrize("architecture", TOWER_CLASSES)
@pytest.mark.parametrize("spec", [CONFIGS["quick_gelu-eos98"], CONFIGS["mixed-acts-grey"]],
                         ids=["quick_gelu-eos98", "mixed-acts-grey"])
def test_a_one_tower_class_loads_its_tower_from_a_whole_clip_folder(tmp_path, architecture, spec):
    """As in transformers: the tower's config, weights and projection; the other tower is left out."""
    whole = _save_hf(tmp_path, "CLIPModel", spec)
    theirs = getattr(transformers, architecture).from_pretrained(str(tmp_path)).eval()
    ours = getattr(polyformer, architecture).from_pretrained(tmp_path)
    assert type(ours).__name__ == architecture and not ours.training
    inputs = _inputs(architecture, spec)
    with torch.no_grad():
        _assert_same(ours(**inputs), theirs(**inputs), FIELDS[architecture])
        if architecture.endswith("WithProjection"):  # the projection is the whole model's
            is_text = "Text" in architecture
            features = whole.get_text_features(**inputs) if is_text else whole.get_image_features(**inputs)
            got = ours(**inputs).text_embeds if is_text else ours(**inputs).image_embeds
            torch.testing.assert_close(got, features.pooler_output, atol=ATOL, rtol=ATOL)


def test_a_projection_model_takes_the_clip_configs_projection_dim(tmp_path):
    """A clip config.json whose towers' own projection_dim differs from the model's (transformers
    keeps the tower's, so its ...WithProjection classes cannot load such a folder): the projection
    weights are the model's width, and so is ours."""
    spec = CONFIGS["quick_gelu-eos98"]
    config = transformers.CLIPConfig(text_config={**_text_config(spec), "projection_dim": 7},
                                     vision_config={**_vision_config(spec), "projection_dim": 512},
                                     projection_dim=spec["projection_dim"])
    whole = randomise(transformers.CLIPModel(config), seed=0)
    whole.save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="mismatched"):  # why ours differs from transformers here
        transformers.CLIPTextModelWithProjection.from_pretrained(str(tmp_path))
    text, vision = _texts(), _images(spec)
    with torch.no_grad():
        got = polyformer.CLIPTextModelWithProjection.from_pretrained(tmp_path)(**text).text_embeds
        torch.testing.assert_close(got, whole.get_text_features(**text).pooler_output, atol=ATOL, rtol=ATOL)
        got = polyformer.CLIPVisionModelWithProjection.from_pretrained(tmp_path)(**vision).image_embeds
        torch.testing.assert_close(got, whole.get_image_features(**vision).pooler_output, atol=ATOL, rtol=ATOL)
    assert polyformer.CLIPTextModelWithProjection.from_pretrained(tmp_path).config.projection_dim == 20


def test_a_tower_loaded_from_a_whole_clip_folder_is_still_strict(tmp_path):
    """Only the other tower, the other projection and logit_scale are left out: a missing or
    mis-shaped weight of the tower being loaded and a key no CLIP model has are still named."""
    spec = CONFIGS["quick_gelu-eos98"]
    _save_hf(tmp_path, "CLIPModel", spec)
    state, _ = load_state_dict(tmp_path)
    broken = {k: v for k, v in state.items() if k != "vision_model.post_layernorm.weight"}  # the other tower's
    save_state_dict(broken, tmp_path / "model.safetensors")
    polyformer.CLIPTextModelWithProjection.from_pretrained(tmp_path)  # the text model does not need it
    broken = dict(state)
    del broken["text_model.encoder.layers.1.mlp.fc2.weight"]
    broken["text_projection.weight"] = torch.zeros(20, 31)
    broken["text_model.pooler.weight"] = torch.zeros(2)
    save_state_dict(broken, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        polyformer.CLIPTextModelWithProjection.from_pretrained(tmp_path)
    message = str(error.value)
    assert "missing weights: text_model.decoder.layers.1.mlp.fc_out.weight" in message
    assert "unexpected weights: text_model.pooler.weight" in message
    assert "text_projection.weight (checkpoint (20, 31), model (20, 32))" in message
    assert "vision" not in message and "logit_scale" not in message
    with pytest.raises(CheckpointError, match="missing weights: text_model.decoder.layers.1.mlp.fc_out.weight"):
        polyformer.CLIPTextModel.from_pretrained(tmp_path)
