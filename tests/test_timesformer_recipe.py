"""The moving-digits recipe at tiny size: three attention types trained on the one trainer, accuracy
recomputed from the returned models, the saved folders read back by ``from_pretrained`` and the
video-classification pipeline, the command line, and bad options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from polyformer.data.mnist import MNIST
from polyformer.errors import ConfigError
from polyformer.recipes.video import ATTENTION_TYPES, VideoDigitsOptions, train_video_digits


def _tiny_mnist() -> MNIST:
    """Random 28x28 'digits' (the recipe's data path without reading MNIST)."""
    rng = np.random.default_rng(0)
    images = (rng.random((60, 28, 28)) < 0.3).astype(np.uint8) * 255
    labels = rng.integers(0, 10, size=60)
    return MNIST(images[:40], labels[:40], images[40:], labels[40:], "random")


def _tiny_options(**changes) -> VideoDigitsOptions:
    values = dict(num_frames=4, image_size=16, digit_size=8, patch_size=8, d_model=16, n_layers=1, n_heads=2,
                  d_ff=32, steps=4, batch_size=8, warmup_steps=1, test_videos=12, threads=None)
    return VideoDigitsOptions(**{**values, **changes})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("video") / "video-digits"
    return train_video_digits(_tiny_options(), out, data=_tiny_mnist(), progress=False), out


def test_every_attention_type_runs_and_is_measured(trained) -> None:
    result, out = trained
    assert list(result.runs) == list(ATTENTION_TYPES)
    # what each run reports is the accuracy of its model on the held-out videos, recomputed here
    from polyformer.data.moving_digits import to_pixel_values

    x, y = to_pixel_values(result.test_videos), torch.from_numpy(result.test_labels)
    for kind, run in result.runs.items():
        assert run.steps == 4 and run.seconds_per_step > 0 and run.parameters > 0
        model = result.model if kind == ATTENTION_TYPES[0] else __import__("polyformer").from_pretrained(out / kind)
        assert model.config.attention_type == kind
        with torch.no_grad():
            accuracy = float((model(x).logits.argmax(-1) == y).float().mean())
        assert accuracy == pytest.approx(run.test_accuracy, abs=1e-6)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["runs"]) == set(ATTENTION_TYPES)
    assert metrics["runs"]["joint_space_time"]["test_accuracy"] == result.runs["joint_space_time"].test_accuracy
    assert metrics["chance"] == 0.25 and metrics["test_videos"] == 12
    # space-only has no time embeddings; joint and divided do, and divided adds a temporal attention
    params = {kind: run.parameters for kind, run in result.runs.items()}
    assert params["space_only"] < params["joint_space_time"] < params["divided_space_time"]


def test_saved_folder_goes_into_the_pipeline(trained) -> None:
    from PIL import Image

    import polyformer
    from polyformer.pipelines import pipeline

    result, out = trained
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    loaded = polyformer.from_pretrained(out)
    assert loaded.config.id2label == {0: "up", 1: "down", 2: "left", 3: "right"}
    classifier = pipeline("video-classification", model=out)
    frames = [Image.fromarray(f) for f in result.test_videos[0]]
    predictions = classifier(frames, top_k=4)
    from polyformer.data.moving_digits import to_pixel_values

    with torch.no_grad():
        probs = result.model(to_pixel_values(result.test_videos[:1])).logits.softmax(-1)[0]
    expected = {result.model.config.id2label[i]: float(p) for i, p in enumerate(probs)}
    assert len(predictions) == 4
    for p in predictions:
        assert p["score"] == pytest.approx(expected[p["label"]], abs=1e-5)


def test_running_again_resumes(trained) -> None:
    result, out = trained
    again = train_video_digits(_tiny_options(attention_types=("divided_space_time",)), out, data=_tiny_mnist(),
                               progress=False)
    run = again.runs["divided_space_time"]
    assert run.test_accuracy == pytest.approx(result.runs["divided_space_time"].test_accuracy)
    assert (out / "training").is_dir()


def test_command_line(tmp_path, monkeypatch, capsys) -> None:
    from polyformer.cli import main
    import polyformer.recipes.video as recipe

    real = recipe.train_video_digits
    monkeypatch.setattr(recipe, "train_video_digits",
                        lambda options, out, progress: real(
                            _tiny_options(attention_types=options.attention_types, steps=options.steps),
                            out, data=_tiny_mnist(), progress=progress))
    code = main(["train", "video-digits", "--out", str(tmp_path / "v"), "--steps", "2", "--quiet",
                 "--attention-types", "space_only", "joint_space_time"])
    printed = capsys.readouterr().out
    assert code in (0, None)
    assert "space_only" in printed and "joint_space_time" in printed and "ms/step" in printed
    assert json.loads((tmp_path / "v" / "metrics.json").read_text())["runs"]["space_only"]["steps"] == 2


def test_bad_options_are_named() -> None:
    with pytest.raises(ConfigError, match="attention_types"):
        VideoDigitsOptions(attention_types=("sideways",))
    with pytest.raises(ConfigError, match="each once"):
        VideoDigitsOptions(attention_types=("space_only", "space_only"))
    with pytest.raises(ConfigError, match="patch_size"):
        VideoDigitsOptions(patch_size=5)
    with pytest.raises(ConfigError, match="steps"):
        VideoDigitsOptions(steps=0)
    with pytest.raises(ConfigError, match="speed"):
        VideoDigitsOptions(speed=20)


def test_demo_section_at_tiny_size(tmp_path, monkeypatch) -> None:
    import polyformer.demo.video_section as section
    import polyformer.recipes.video as recipe
    from polyformer.demo import run_demo

    real = recipe.train_video_digits
    monkeypatch.setattr(recipe, "train_video_digits",
                        lambda options, out, progress: real(options, out, data=_tiny_mnist(), progress=progress))
    monkeypatch.setattr(section, "quick_options", lambda: _tiny_options(test_videos=24))
    index = run_demo(tmp_path, quick=True, only=["video_section"]).read_text()
    assert "TimeSformer trained here on moving digits" in index
    for kind in ATTENTION_TYPES:
        assert kind in index
    assert (tmp_path / "video_digits_frames.png").stat().st_size > 1000
    assert "video_digits_frames.png" in index
