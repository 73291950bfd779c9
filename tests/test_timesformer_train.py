"""Moving-digit videos and the ``timesformer`` training family: the frames against a naive renderer,
the claim that single frames (and the set of frames) do not tell the direction, the pixel values
against the saved video processor, and a few steps of the one trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polyformer.data.moving_digits import (
    DIRECTIONS, MovingDigits, draw_starts, draw_videos, render_videos, shrink_digits, to_pixel_values, velocities,
)
from polyformer.errors import ConfigError, DataError, ShapeError

GEOMETRY = MovingDigits(num_frames=4, image_size=16, digit_size=6)  # 4 pixels a frame: one full turn


def _digits(n: int, size: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size), dtype=np.uint8)


def _naive_video(digit: np.ndarray, direction: int, start: tuple[int, int], geometry: MovingDigits) -> np.ndarray:
    """One video by pasting and rolling, frame by frame."""
    dy, dx = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}[direction]
    canvas = np.zeros((geometry.image_size,) * 2, np.uint8)
    canvas[:digit.shape[0], :digit.shape[1]] = digit
    frames = []
    for t in range(geometry.num_frames):
        shift = (start[0] + t * dy * geometry.step, start[1] + t * dx * geometry.step)
        frames.append(np.roll(canvas, shift, axis=(0, 1)))
    return np.stack(frames)


def test_render_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(1)
    digits = _digits(12)
    directions = rng.integers(0, 4, size=12)
    starts = rng.integers(0, 16, size=(12, 2))
    videos = render_videos(digits, directions, starts, GEOMETRY)
    assert videos.shape == (12, 4, 16, 16) and videos.dtype == np.uint8
    for i in range(12):
        np.testing.assert_array_equal(videos[i], _naive_video(digits[i], int(directions[i]), tuple(starts[i]), GEOMETRY))


def test_other_speeds_and_velocities() -> None:
    geometry = MovingDigits(num_frames=3, image_size=20, digit_size=5, speed=2)
    digits = _digits(4, 5)
    starts = np.array([[0, 0], [3, 4], [19, 19], [10, 2]])
    videos = render_videos(digits, np.arange(4), starts, geometry)
    for i in range(4):
        np.testing.assert_array_equal(videos[i], _naive_video(digits[i], i, tuple(starts[i]), geometry))
    np.testing.assert_array_equal(velocities(np.arange(4), 3), [[-3, 0], [3, 0], [0, -3], [0, 3]])


def test_opposite_directions_show_the_same_frames() -> None:
    """A full turn over the clip: the frames of a video moving one way, reversed, are the frames of the
    opposite direction from the last position — no single frame, nor the set, tells them apart."""
    digits = _digits(5)
    starts = np.random.default_rng(2).integers(0, 16, size=(5, 2))
    travel = (GEOMETRY.num_frames - 1) * GEOMETRY.step
    for forward, backward, axis in ((3, 2, 1), (1, 0, 0)):  # right/left along columns, down/up along rows
        ends = starts.copy()
        ends[:, axis] = (ends[:, axis] + (travel if forward in (1, 3) else -travel)) % 16
        a = render_videos(digits, np.full(5, forward), starts, GEOMETRY)
        b = render_videos(digits, np.full(5, backward), ends, GEOMETRY)
        np.testing.assert_array_equal(a[:, ::-1], b)
        assert not np.array_equal(a, b)  # the order differs: only time tells the direction


def test_draw_videos_is_seeded_and_balanced() -> None:
    digits = _digits(30)
    a, la = draw_videos(digits, 400, GEOMETRY, seed=3)
    b, lb = draw_videos(digits, 400, GEOMETRY, seed=3)
    c, _ = draw_videos(digits, 400, GEOMETRY, seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    counts = np.bincount(la, minlength=len(DIRECTIONS))
    assert counts.min() > 70  # about 100 each
    # every frame holds the whole digit (the canvas wraps), whatever the position
    assert (a.reshape(400, 4, -1).sum(-1) == a[:, :1].reshape(400, 1, -1).sum(-1)).all()


def test_shrink_digits_is_a_box_average() -> None:
    digits = np.random.default_rng(5).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    small = shrink_digits(digits, 14)
    expected = digits.reshape(3, 14, 2, 14, 2).astype(np.float64).mean(axis=(2, 4))
    assert small.shape == (3, 14, 14) and small.dtype == np.uint8
    assert np.abs(small.astype(np.float64) - expected).max() <= 1.0


def test_pixel_values_match_the_saved_video_processor() -> None:
    from PIL import Image

    from polyformer.recipes.video import video_processor

    videos, _ = draw_videos(_digits(8), 3, GEOMETRY, seed=0)
    ours = to_pixel_values(videos, 3)
    assert ours.shape == (3, 4, 3, 16, 16)
    processor = video_processor(16, 3)
    frames = [[Image.fromarray(f) for f in video] for video in videos]
    theirs = processor(frames, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ConfigError, match="num_frames"):
        MovingDigits(num_frames=1)
    with pytest.raises(ConfigError, match="digit_size"):
        MovingDigits(image_size=16, digit_size=20)
    with pytest.raises(ConfigError, match="speed"):
        MovingDigits(image_size=16, speed=8)
    with pytest.raises(ConfigError, match="too small"):
        MovingDigits(num_frames=8, image_size=6, digit_size=4)
    with pytest.raises(ShapeError, match="digits must be"):
        render_videos(_digits(2, 5), np.zeros(2, int), np.zeros((2, 2), int), GEOMETRY)
    with pytest.raises(ShapeError, match="starts must be"):
        render_videos(_digits(2), np.zeros(3, int), np.zeros((2, 2), int), GEOMETRY)
    with pytest.raises(DataError, match="direction labels"):
        render_videos(_digits(2), np.array([0, 4]), np.zeros((2, 2), int), GEOMETRY)
    with pytest.raises(DataError, match="positive"):
        draw_videos(_digits(2), 0, GEOMETRY, seed=0)
    with pytest.raises(ShapeError, match="uint8"):
        to_pixel_values(np.zeros((2, 4, 16, 16), np.float32))


# ------------------------------------------------------------------------------------------------
# The training family
# ------------------------------------------------------------------------------------------------
CONFIG = {"image_size": 16, "patch_size": 8, "num_channels": 3, "num_frames": 4, "d_model": 16, "n_layers": 1,
          "n_heads": 2, "d_ff": 32}


@pytest.mark.parametrize("attention_type", ["divided_space_time", "joint_space_time", "space_only"])
def test_family_builds_the_video_classifier(attention_type: str) -> None:
    from polyformer.models.timesformer import TimesformerForVideoClassification
    from polyformer.train.models import ModelSpec, build_model, family_of, tokens_per_example

    spec = ModelSpec("timesformer", {**CONFIG, "attention_type": attention_type})
    assert spec.task_name == "classification"
    model = build_model(spec, 4)  # the data decides the number of classes
    assert isinstance(model, TimesformerForVideoClassification)
    assert model.config.num_labels == 4 and model.config.attention_type == attention_type
    assert tokens_per_example(spec, model) == 4 * 4 + 1  # frames x patches + the class token
    total, rest = family_of("timesformer").count(model)
    embeddings = sum(p.numel() for n, p in model.named_parameters() if n.startswith("timesformer.embeddings."))
    assert embeddings > 0 and (total, rest) == (sum(p.numel() for p in model.parameters()), total - embeddings)
    logits = model(to_pixel_values(draw_videos(_digits(4), 2, GEOMETRY, seed=0)[0])).logits
    assert logits.shape == (2, 4)


def test_space_only_cannot_tell_opposite_directions() -> None:
    """Space-only averages per-frame predictions: a video and its time-reversed opposite score alike."""
    from polyformer.train.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("timesformer", {**CONFIG, "attention_type": "space_only"}), 4).eval()
    divided = build_model(ModelSpec("timesformer", {**CONFIG, "attention_type": "divided_space_time"}), 4).eval()
    videos, _ = draw_videos(_digits(6), 5, GEOMETRY, seed=1)
    x = to_pixel_values(videos)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, model(x.flip(1)).logits, atol=1e-5, rtol=1e-5)
        # with time embeddings (zero at initialisation, learnt in training), divided attention sees the order
        divided.timesformer.embeddings.time_embeddings.normal_(std=0.5)
        assert (divided(x).logits - divided(x.flip(1)).logits).abs().max() > 1e-4


def test_a_few_trainer_steps_lower_the_loss(tmp_path) -> None:
    from polyformer.train import ModelSpec, TrainConfig, train
    from polyformer.train.examples import ExampleSet

    videos, labels = draw_videos(_digits(6), 16, GEOMETRY, seed=2)
    examples = ExampleSet({"pixel_values": to_pixel_values(videos)}, torch.from_numpy(labels))
    spec = ModelSpec("timesformer", {**CONFIG, "attention_type": "divided_space_time"})
    config = TrainConfig(total_steps=60, batch_size=16, seq_len=17, lr=5e-3, warmup_steps=0, eval_interval=0,
                         eval_tokens=16 * 17, checkpoint_interval=0, seed=0, out_dir=str(tmp_path / "run"),
                         progress=False)
    result = train(spec, examples, examples, 4, config)
    assert result.final_val_loss < 0.5 * math.log(4)  # from about ln 4 at the start: it memorises 16 videos
    assert result.metrics["val_accuracy"] >= 0.5  # chance is 0.25


def test_family_starts_the_time_table_random() -> None:
    """Trained from scratch, a zero time table would leave the frames exchangeable (see families.py)."""
    from polyformer.models.timesformer import TimesformerConfig, TimesformerForVideoClassification
    from polyformer.train.models import ModelSpec, build_model

    torch.manual_seed(0)
    config = {**CONFIG, "num_frames": 64, "d_model": 32, "attention_type": "divided_space_time"}
    table = build_model(ModelSpec("timesformer", config), 4).timesformer.embeddings.time_embeddings
    assert float(table.detach().std()) == pytest.approx(0.02, rel=0.15)
    plain = TimesformerForVideoClassification(TimesformerConfig(**config, num_labels=4))
    assert float(plain.timesformer.embeddings.time_embeddings.detach().abs().max()) == 0.0  # transformers' start


def test_starts_lie_within_one_step_along_the_motion() -> None:
    directions = np.repeat(np.arange(4), 500)
    starts = draw_starts(directions, GEOMETRY, np.random.default_rng(0))
    along = np.where(directions >= 2, starts[:, 1], starts[:, 0])
    across = np.where(directions >= 2, starts[:, 0], starts[:, 1])
    assert along.min() == 0 and along.max() == GEOMETRY.step - 1
    assert across.min() == 0 and across.max() == GEOMETRY.image_size - 1
    # every frame, its time unknown, is uniform over the canvas along the motion too
    positions = (along[:, None] + GEOMETRY.step * np.arange(GEOMETRY.num_frames)) % GEOMETRY.image_size
    counts = np.bincount(positions.ravel(), minlength=GEOMETRY.image_size)
    assert counts.min() > 0.7 * counts.mean()
    anywhere = draw_starts(directions, MovingDigits(4, 16, 6, start_anywhere=True), np.random.default_rng(0))
    assert anywhere.max(axis=0).min() == 15


def test_a_sweep_of_the_timesformer_family_on_moving_digits(tmp_path) -> None:
    from polyformer.scaling.store import RunStore
    from polyformer.scaling.sweep import ModelSize, SweepPlan, run_sweep

    # 8 frames of 4 x 4 patches and the class token: 129 tokens a video
    plan = SweepPlan(sizes=[ModelSize(1, 8, 2), ModelSize(1, 16, 2)], tokens=[4 * 8 * 129], tokens_per_param=None,
                     batch_size=8, lr=3e-3, eval_tokens=129 * 16, evals_per_run=1, family="timesformer",
                     data_options={"train_limit": 64, "test_videos": 16})
    result = run_sweep(plan, "moving-digits", tmp_path / "runs.sqlite", sweep="video", progress=False,
                       log=lambda s: None)
    assert len(result.trained) == 2 and not result.failed
    with RunStore(tmp_path / "runs.sqlite") as store:
        runs = store.runs(status="finished")
    assert {r.tokens for r in runs} == {4 * 8 * 129}
    assert all(np.isfinite(r.final_val_loss) for r in runs)


def test_moving_digits_data_refuses_other_tasks_and_unknown_options() -> None:
    from polyformer.train.data import load_task_data

    with pytest.raises(DataError, match="classification task, not 'next-pixel'"):
        load_task_data("next-pixel", "moving-digits")
    with pytest.raises(ConfigError, match=r"unknown data options \['fps'\]; moving-digits takes"):
        load_task_data("classification", "moving-digits", {"fps": 2})
