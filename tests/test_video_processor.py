"""VideoProcessor against transformers' processor for TimeSformer folders (VideoMAEImageProcessorPil,
what AutoImageProcessor gives without torchvision): same files in and out, same pixel values."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from polyformer.errors import ConfigError, DataError
from polyformer.processors import AutoImageProcessor, AutoProcessor, VideoProcessor
from polyformer.processors.video import VIDEO_CONFIG_NAME

transformers = pytest.importorskip("transformers")
from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil  # noqa: E402

RNG = np.random.default_rng(1)


def _video(t, h, w):
    return [Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)) for _ in range(t)]


def _smooth_video(t, h, w):
    y, x = np.mgrid[0:h, 0:w]
    return [Image.fromarray(np.stack([(x * 7 + i * 9) % 256, (y * 5) % 256, (x + y + i) % 256], -1).astype(np.uint8))
            for i in range(t)]


SETTINGS = [
    dict(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16}),
    dict(size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24}, image_mean=[0.45, 0.45, 0.45],
         image_std=[0.225, 0.225, 0.225]),
    dict(size={"height": 18, "width": 14}, do_center_crop=False, resample=3),
    dict(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, do_normalize=False),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(sorted(s)))
def test_pixel_values_match_transformers_on_several_videos(settings):
    videos = [_video(4, 30, 40), _smooth_video(4, 64, 48), _video(4, 17, 23)]
    expected = VideoMAEImageProcessorPil(**settings)(videos, return_tensors="pt")["pixel_values"]
    got = VideoProcessor(**settings)(videos)["pixel_values"]
    assert got.shape == expected.shape and got.dtype == torch.float32 and got.dim() == 5
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # one video alone gives a batch of one, the same values
    torch.testing.assert_close(VideoProcessor(**settings)(videos[1])["pixel_values"], expected[1:2], rtol=0, atol=1e-6)


def test_default_settings_match_transformers_defaults():
    ours, theirs = VideoProcessor(), VideoMAEImageProcessorPil()
    for key in ("size", "crop_size", "image_mean", "image_std", "resample", "rescale_factor"):
        assert json.loads(json.dumps(getattr(ours, key), default=list)) == pytest.approx(
            json.loads(json.dumps(dict(getattr(theirs, key)) if key.endswith("size") else getattr(theirs, key),
                                  default=list))), key


def test_grayscale_and_array_videos_are_converted_as_rgb():
    rgb = _video(3, 20, 20)
    gray = [f.convert("L") for f in rgb]
    processor = VideoProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    expected = VideoMAEImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})(
        [[f.convert("RGB") for f in gray]], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(processor(gray)["pixel_values"], expected, rtol=0, atol=1e-6)
    gray_array = np.stack([np.asarray(f) for f in gray])  # (T, H, W)
    torch.testing.assert_close(processor(gray_array)["pixel_values"], expected, rtol=0, atol=1e-6)


def test_files_round_trip_with_transformers(tmp_path):
    theirs = VideoMAEImageProcessorPil(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16},
                                       image_mean=[0.45] * 3, image_std=[0.225] * 3)
    theirs.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "timesformer"}))
    for loaded in (VideoProcessor.from_pretrained(tmp_path / "hf"), AutoImageProcessor.from_pretrained(tmp_path / "hf"),
                   AutoProcessor.from_pretrained(tmp_path / "hf")):
        assert isinstance(loaded, VideoProcessor) and loaded.size == {"shortest_edge": 20}
        assert list(loaded.image_mean) == [0.45] * 3
    ours = VideoProcessor.from_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "ours")
    written = json.loads((tmp_path / "ours" / "preprocessor_config.json").read_text())
    assert written["image_processor_type"] == "VideoMAEImageProcessor"
    back = transformers.AutoImageProcessor.from_pretrained(tmp_path / "ours")
    video = _video(4, 25, 30)
    torch.testing.assert_close(ours(video)["pixel_values"], back(video, return_tensors="pt")["pixel_values"],
                               rtol=0, atol=1e-6)


def test_video_processor_file_keeps_timesformer_defaults(tmp_path):
    from transformers.models.timesformer.video_processing_timesformer import TimesformerVideoProcessor as Theirs

    # the file transformers writes for TimesformerVideoProcessor (it needs torchvision to run, not to be read)
    raw = {"video_processor_type": "TimesformerVideoProcessor", "size": {"shortest_edge": 20},
           "crop_size": {"height": 16, "width": 16}, "do_sample_frames": False, "resample": 2}
    (tmp_path / VIDEO_CONFIG_NAME).write_text(json.dumps(raw))
    ours = VideoProcessor.from_pretrained(tmp_path)
    assert list(ours.image_mean) == pytest.approx(Theirs.image_mean)  # left out of the file: the class's defaults
    assert list(ours.image_std) == pytest.approx(Theirs.image_std)
    default = VideoProcessor.for_video_processor_file()
    assert default.size == Theirs.size and default.crop_size == Theirs.crop_size and default.resample == Theirs.resample
    ours.save_pretrained(tmp_path / "out")
    written = json.loads((tmp_path / "out" / VIDEO_CONFIG_NAME).read_text())
    assert written["video_processor_type"] == "TimesformerVideoProcessor" and "image_processor_type" not in written
    assert written["do_sample_frames"] is False  # unknown keys come back
    assert not (tmp_path / "out" / "preprocessor_config.json").exists()
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "timesformer"}))
    assert isinstance(AutoProcessor.from_pretrained(tmp_path), VideoProcessor)


def test_sampling_inside_the_processor_and_shape_errors():
    processor = VideoProcessor(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8})
    clip = np.stack([np.full((8, 8, 3), 10 * i, np.uint8) for i in range(10)])
    out = processor(clip, num_frames=4)["pixel_values"]
    expected = processor(clip[[0, 3, 6, 9]])["pixel_values"]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with pytest.raises(DataError, match="differ in shape"):
        processor([clip[:3], clip[:4]])
    assert [a.shape for a in processor([clip[:3], clip[:4]], return_tensors=None)["pixel_values"]] == [(3, 3, 8, 8),
                                                                                                        (4, 3, 8, 8)]


def test_bad_settings_and_files(tmp_path):
    with pytest.raises(ConfigError, match="num_channels must be 3"):
        VideoProcessor(image_mean=[0.5], image_std=[0.5])
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "CLIPImageProcessor"}))
    with pytest.raises(ConfigError, match="not a TimeSformer"):
        VideoProcessor.from_pretrained(tmp_path)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="video_preprocessor_config.json is missing"):
        VideoProcessor.from_pretrained(tmp_path / "nothing")
