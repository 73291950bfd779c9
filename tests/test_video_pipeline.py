"""pipeline("video-classification") and `polyformer classify-video` against transformers: the same
labels and scores on a tiny random TimeSformer, and transformers' own pipeline when PyAV is there."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from polyformer.cli import main
from polyformer.errors import ConfigError, DataError
from polyformer.pipelines import pipeline
from polyformer.processors import VideoProcessor
from _video_files import write_mp4

transformers = pytest.importorskip("transformers")
from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil  # noqa: E402
from transformers.pipelines.video_classification import VideoClassificationPipeline as HFPipeline  # noqa: E402

HAS_AV = importlib.util.find_spec("av") is not None
RNG = np.random.default_rng(2)
SIZE = dict(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny random TimesformerForVideoClassification folder, as transformers writes it."""
    path = tmp_path_factory.mktemp("timesformer")
    torch.manual_seed(0)
    config = transformers.TimesformerConfig(image_size=16, patch_size=8, num_frames=4, hidden_size=32,
                                            num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                            num_labels=5, id2label={i: f"action {i}" for i in range(5)})
    model = transformers.TimesformerForVideoClassification(config).eval()
    with torch.no_grad():  # transformers zero-initialises the temporal projection; make time matter
        for layer in model.timesformer.encoder.layer:
            layer.temporal_dense.weight.normal_(0, 0.2)
    model.save_pretrained(path)
    VideoMAEImageProcessorPil(**SIZE).save_pretrained(path)
    return path


def _hf_reference(folder, videos, top_k, model=None):
    """transformers' model (or ``model``), processor and its pipeline's own post-processing, on the same frames."""
    model = model or transformers.TimesformerForVideoClassification.from_pretrained(folder).eval()
    processor = VideoMAEImageProcessorPil.from_pretrained(folder)
    post = object.__new__(HFPipeline)  # its constructor demands PyAV; postprocess only needs the model
    post.model = model
    out = []
    for frames in videos:
        with torch.no_grad():
            outputs = model(**processor(frames, return_tensors="pt"))
        out.append(post.postprocess(outputs, top_k=top_k))
    return out


def _assert_same(got, expected):
    assert [[p["label"] for p in r] for r in got] == [[p["label"] for p in r] for r in expected]
    for ours, theirs in zip(got, expected):
        np.testing.assert_allclose([p["score"] for p in ours], [p["score"] for p in theirs], rtol=0, atol=1e-5)


def _clip(t, h=20, w=24):
    return RNG.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_labels_and_scores_match_transformers(folder):
    clips = [_clip(4), _clip(4, 30, 18), _clip(4)]
    classifier = pipeline("video-classification", model=folder)
    expected = _hf_reference(folder, [list(c) for c in clips], top_k=3)
    _assert_same(classifier(clips, top_k=3), expected)
    one = classifier(clips[1], top_k=3)
    assert isinstance(one, list) and set(one[0]) == {"label", "score"}
    _assert_same([one], expected[1:2])
    assert len(classifier(clips[0], top_k=50)) == 5  # top_k above the labels gives every label, as transformers


def test_num_frames_and_sampling_rate_pick_transformers_frames(folder):
    clip = _clip(20)
    classifier = pipeline("video-classification", model=folder, top_k=5)
    rate = np.linspace(0, 4 * 3 - 1, 4, dtype=np.int64)  # transformers' indices for 4 frames at rate 3
    _assert_same([classifier(clip, frame_sampling_rate=3)], _hf_reference(folder, [list(clip[rate])], 5))
    uniform = np.rint(np.linspace(0, 19, 4)).astype(int)
    _assert_same([classifier(clip)], _hf_reference(folder, [list(clip[uniform])], 5))
    # a frame count other than the config's: transformers' divided blocks read config.num_frames and
    # mix frames up, so the reference model is ours here (its time table resized); the frames and the
    # processing are still transformers'
    from polyformer import from_pretrained

    six = np.rint(np.linspace(0, 19, 6)).astype(int)
    reference = _hf_reference(folder, [list(clip[six])], 5, model=from_pretrained(folder).eval())
    _assert_same([classifier(clip, num_frames=6)], reference)


def test_gif_folder_and_function_to_apply(folder, tmp_path):
    palette = np.array([[0, 0, 0], [255, 255, 255], [200, 30, 30], [30, 30, 200]], dtype=np.uint8)
    clip = palette[RNG.integers(0, 4, (4, 16, 16))]
    frames = [Image.fromarray(f) for f in clip]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "frames").mkdir()
    for i, f in enumerate(frames):
        f.save(tmp_path / "frames" / f"{i}.png")
    classifier = pipeline("video-classification", model=folder)
    expected = _hf_reference(folder, [frames], 5)
    _assert_same(classifier([str(tmp_path / "a.gif"), tmp_path / "frames"])[:1], expected)
    _assert_same(classifier([tmp_path / "frames"]), expected)
    raw = classifier(clip, function_to_apply="none")
    model = transformers.TimesformerForVideoClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(**VideoMAEImageProcessorPil.from_pretrained(folder)(list(clip), return_tensors="pt")).logits[0]
    assert raw[0]["score"] == pytest.approx(float(logits.max()), abs=1e-5)


def test_errors(folder):
    with pytest.raises(ConfigError, match="top_k"):
        pipeline("video-classification", model=folder)(_clip(4), top_k=0)
    with pytest.raises(DataError, match="frame_sampling_rate"):
        pipeline("video-classification", model=folder)(_clip(5), frame_sampling_rate=4)
    with pytest.raises(DataError, match="no videos"):
        pipeline("video-classification", model=folder)([])
    model = transformers.TimesformerForVideoClassification.from_pretrained(folder)
    with pytest.raises(ConfigError, match="needs processor"):
        pipeline("video-classification", model=model)
    with pytest.raises(ConfigError, match="processor makes 24x24"):
        pipeline("video-classification", model=model, processor=VideoProcessor(size=24, crop_size=24))


def test_cli_classify_video(folder, tmp_path, capsys):
    clip = _clip(6)
    frames = [Image.fromarray(f) for f in clip]
    frames[0].save(tmp_path / "v.png", save_all=True, append_images=frames[1:])  # APNG keeps exact colours
    assert main(["classify-video", str(tmp_path / "v.png"), "--model", str(folder), "--top-k", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    uniform = np.rint(np.linspace(0, 5, 4)).astype(int)
    _assert_same([printed[0]["predictions"]], _hf_reference(folder, [[frames[i] for i in uniform]], 2))
    assert main(["classify-video", str(tmp_path / "v.png"), "--model", str(folder), "--frame-sampling-rate", "3"]) == 2
    assert "frame_sampling_rate" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_AV, reason="transformers' video pipeline needs PyAV (pip install av); not installed here")
def test_same_output_as_transformers_pipeline_on_a_video_file(folder, tmp_path):
    clip = np.repeat(np.repeat(_clip(12, 4, 4), 4, 1), 4, 2)
    write_mp4(clip, tmp_path / "c.mp4")
    theirs = transformers.pipeline("video-classification", model=str(folder))
    ours = pipeline("video-classification", model=folder)
    # num_frames stays the config's: transformers' divided blocks mix frames up at other counts
    for kwargs in (dict(top_k=3, frame_sampling_rate=1), dict(top_k=5, frame_sampling_rate=2),
                   dict(frame_sampling_rate=3)):
        _assert_same([ours(str(tmp_path / "c.mp4"), **kwargs)], [theirs(str(tmp_path / "c.mp4"), **kwargs)])
