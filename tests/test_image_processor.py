"""The Pillow/NumPy image processors against Hugging Face's, on varied images; modes, sizes, bad files."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from polyformer.errors import ConfigError, DataError
from polyformer.processors import ImageGPTProcessor, ImageProcessor, fit_palette, load_image, load_image_processor

transformers = pytest.importorskip("transformers")


def _hf_vit_processor(**kwargs):
    """transformers 5's Pillow backend, or the NumPy ViTImageProcessor of transformers 4."""
    try:
        from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil as cls
    except ImportError:
        cls = transformers.ViTImageProcessor
    return cls(**kwargs)


def _hf_igpt_processor(**kwargs):
    try:
        from transformers.models.imagegpt.image_processing_pil_imagegpt import ImageGPTImageProcessorPil as cls
    except ImportError:
        cls = transformers.ImageGPTImageProcessor
    return cls(**kwargs)


RNG = np.random.default_rng(0)


def _rgb(h, w):
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _smooth_rgb(h, w):
    """A gradient image: resampling differences would show as large errors on smooth content too."""
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8))


SETTINGS = [
    dict(),
    dict(size={"height": 12, "width": 20}, resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]),
    dict(size={"shortest_edge": 20}, do_center_crop=True, crop_size={"height": 16, "width": 16}),
    dict(size={"shortest_edge": 20, "longest_edge": 30}, do_center_crop=True, crop_size={"height": 24, "width": 40}),
    dict(size={"height": 9, "width": 9}, resample=0, do_normalize=False),
    dict(size=18, resample=1, do_rescale=False),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(sorted(s)) or "defaults")
def test_pixel_values_match_transformers_on_mixed_sizes(settings):
    images = [_rgb(30, 40), _rgb(17, 9), _smooth_rgb(64, 64), _rgb(1, 5)]
    expected = _hf_vit_processor(**settings)(images, return_tensors="pt")["pixel_values"]
    got = ImageProcessor(**settings)(images)["pixel_values"]
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_modes_grayscale_rgba_and_palette_match_transformers_convert_to_rgb():
    rgba = np.concatenate([RNG.integers(0, 256, (20, 24, 3)), RNG.integers(0, 256, (20, 24, 1))], -1).astype(np.uint8)
    palette = _rgb(20, 24).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    transparent = palette.copy()
    transparent.info["transparency"] = 3
    images = [_rgb(20, 24).convert("L"), Image.fromarray(rgba), palette, transparent,
              Image.fromarray(np.ascontiguousarray(rgba[..., [0, 3]])), _rgb(20, 24).convert("CMYK")]
    settings = dict(size={"height": 16, "width": 16})
    expected = _hf_vit_processor(**settings, do_convert_rgb=True)(images, return_tensors="pt")["pixel_values"]
    got = ImageProcessor(**settings)(images)["pixel_values"]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_arrays_and_tensors_in_every_layout_equal_the_pil_image():
    pil = _rgb(10, 14)
    array = np.asarray(pil)
    processor = ImageProcessor(size={"height": 8, "width": 8})
    reference = processor(pil)["pixel_values"]
    for variant in (array, np.moveaxis(array, -1, 0), torch.from_numpy(array.copy()), array.astype(np.float32) / 255 + 1e-4 * 0):
        torch.testing.assert_close(processor(variant)["pixel_values"], reference, atol=2 / 255 / 0.5, rtol=0)
    gray = np.asarray(pil.convert("L"))
    torch.testing.assert_close(processor(gray)["pixel_values"], processor(pil.convert("L"))["pixel_values"])
    torch.testing.assert_close(processor(gray[None])["pixel_values"], processor(gray)["pixel_values"])


def test_sixteen_bit_images_are_scaled_not_clipped():
    values = RNG.integers(0, 65536, (12, 12), dtype=np.uint16)
    image = Image.fromarray(values)
    eight_bit = Image.fromarray(np.rint(values / 257).astype(np.uint8))
    processor = ImageProcessor(size={"height": 12, "width": 12})
    torch.testing.assert_close(processor(image)["pixel_values"], processor(eight_bit)["pixel_values"])
    torch.testing.assert_close(processor(values)["pixel_values"], processor(eight_bit)["pixel_values"])
    white = processor(Image.fromarray(np.full((4, 4), 65535, np.uint16)))["pixel_values"]
    assert torch.allclose(white, torch.ones_like(white))  # full-scale 16-bit white stays white (1.0 after norm)
    png = io.BytesIO()
    image.save(png, format="PNG")
    torch.testing.assert_close(processor(png.getvalue())["pixel_values"], processor(eight_bit)["pixel_values"])


def test_one_channel_models_get_grayscale():
    processor = ImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5], image_std=[0.5])
    assert processor.num_channels == 1
    out = processor([_rgb(9, 9), _rgb(9, 9).convert("L")])["pixel_values"]
    assert out.shape == (2, 1, 8, 8)


def test_mixed_sizes_without_a_fixed_size_come_back_as_a_list():
    processor = ImageProcessor(size={"shortest_edge": 8})
    with pytest.raises(DataError, match="differ in size"):
        processor([_rgb(10, 20), _rgb(10, 10)])
    arrays = processor([_rgb(10, 20), _rgb(10, 10)], return_tensors=None)["pixel_values"]
    assert [a.shape for a in arrays] == [(3, 8, 16), (3, 8, 8)]


def test_bad_files_name_the_file(tmp_path):
    missing = tmp_path / "nothing.png"
    with pytest.raises(DataError, match="nothing.png: no such image file"):
        load_image(missing)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    with pytest.raises(DataError, match="notes.jpg: not an image file"):
        load_image(text)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.png: the file is empty"):
        load_image(empty)
    buffer = io.BytesIO()
    _rgb(64, 64).save(buffer, format="PNG")
    truncated = tmp_path / "half.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(DataError, match="half.png: .*truncated or corrupt"):
        ImageProcessor()(str(truncated))
    with pytest.raises(DataError, match="empty"):
        load_image(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(DataError, match="empty"):
        load_image(Image.new("RGB", (0, 4)))
    with pytest.raises(DataError, match=r"\(H, W\), \(H, W, C\) or \(C, H, W\)"):
        load_image(np.zeros((5, 5, 7), np.uint8))
    with pytest.raises(DataError, match="float pixel values"):
        load_image(np.full((4, 4), -3.0))


def test_config_round_trip_and_errors(tmp_path):
    processor = ImageProcessor(size={"shortest_edge": 20}, do_center_crop=True, crop_size=16, extra={"foo": 1})
    processor.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert raw["foo"] == 1 and raw["crop_size"] == {"height": 16, "width": 16}
    assert load_image_processor(tmp_path) == processor
    loaded = type(_hf_vit_processor()).from_pretrained(tmp_path)
    assert loaded.crop_size["height"] == 16
    with pytest.raises(ConfigError, match="size must have keys"):
        ImageProcessor(size={"tall": 3})
    with pytest.raises(ConfigError, match="resample must be one of"):
        ImageProcessor(resample=9)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"preprocessor_config.json is missing.*save_pretrained\(folder\)"):
        load_image_processor(tmp_path / "empty")
    with pytest.raises(DataError, match="nowhere: no such folder"):
        load_image_processor(tmp_path / "nowhere")


def test_settings_in_a_transformers5_processor_config_load(tmp_path):
    """transformers 5 saves a combined processor's image settings as the ``image_processor`` section
    of processor_config.json (no preprocessor_config.json); the loaders read them there."""
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat"]))
    tokenizer = transformers.BertTokenizer(str(tmp_path / "vocab.txt"))
    settings = dict(size={"height": 20, "width": 24}, resample=3)
    transformers.TrOCRProcessor(image_processor=_hf_vit_processor(**settings), tokenizer=tokenizer).save_pretrained(
        str(tmp_path / "hf"))
    assert not (tmp_path / "hf" / "preprocessor_config.json").exists()
    images = [_rgb(30, 40), _smooth_rgb(50, 20)]
    expected = _hf_vit_processor(**settings)(images, return_tensors="pt")["pixel_values"]
    for loaded in (load_image_processor(tmp_path / "hf"), ImageProcessor.from_pretrained(tmp_path / "hf")):
        assert type(loaded) is ImageProcessor and loaded.size == settings["size"]
        torch.testing.assert_close(loaded(images)["pixel_values"], expected, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="describes a processor without a palette, not a ImageGPTProcessor"):
        ImageGPTProcessor.from_pretrained(tmp_path / "hf")
    palette = ImageGPTProcessor(size={"height": 4, "width": 4}, clusters=np.linspace(-1, 1, 12).reshape(4, 3))
    (tmp_path / "igpt").mkdir()
    (tmp_path / "igpt" / "processor_config.json").write_text(json.dumps({"image_processor": palette.to_dict()}))
    for loaded in (load_image_processor(tmp_path / "igpt"), ImageGPTProcessor.from_pretrained(tmp_path / "igpt")):
        assert type(loaded) is ImageGPTProcessor and loaded.to_dict() == palette.to_dict()


# -- iGPT palette -----------------------------------------------------------------------------------
def test_imagegpt_tokens_match_transformers():
    clusters = fit_palette(RNG.uniform(-1, 1, (2000, 3)), 16, seed=1)
    images = [_rgb(20, 30), _smooth_rgb(8, 8), _rgb(5, 5).convert("L")]
    expected = _hf_igpt_processor(clusters=clusters, size={"height": 8, "width": 8}, do_convert_rgb=True)(
        images, return_tensors="pt")["input_ids"]
    got = ImageGPTProcessor(clusters=clusters, size={"height": 8, "width": 8})(images)["input_ids"]
    assert got.shape == (3, 64)
    torch.testing.assert_close(got, torch.as_tensor(expected).long())


def test_palette_decode_inverts_quantisation_and_grayscale_palettes_stay_grey():
    gray_pixels = np.repeat(RNG.uniform(-1, 1, (3000, 1)), 3, axis=1)
    clusters = fit_palette(gray_pixels, 4, grayscale=True)
    assert np.allclose(clusters[:, 0], clusters[:, 1]) and np.all(np.diff(clusters[:, 0]) > 0)
    processor = ImageGPTProcessor(clusters=clusters, size={"height": 6, "width": 6})
    ids = processor(_rgb(6, 6).convert("L"))["input_ids"]
    decoded = processor.decode(ids)[0]
    again = processor(decoded)["input_ids"]
    torch.testing.assert_close(again, ids)  # decoding then quantising is the identity on palette images
    with pytest.raises(DataError, match="palette colours"):
        processor.decode(torch.full((1, 36), 7))


def test_kmeans_finds_well_separated_colours():
    centres = np.array([[-0.8, -0.8, -0.8], [0.0, 0.5, -0.5], [0.9, 0.9, 0.9]])
    pixels = np.concatenate([c + RNG.normal(0, 0.02, (300, 3)) for c in centres])
    found = fit_palette(pixels, 3)
    assert np.abs(np.sort(found, axis=0) - np.sort(centres, axis=0)).max() < 0.02
