"""Demo section: TimeSformers trained here on moving digits — divided vs joint vs space-only attention.

The ``video-digits`` recipe (:mod:`polyformer.recipes.video`) trains one small model per attention
type on videos whose direction only the order of the frames tells. The section tabulates held-out
accuracy and measured time per step side by side, and draws a few test videos frame by frame with
the true direction and what the divided and the space-only models predict.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from polyformer.demo.report import Report, Section

SHOWN_VIDEOS = 4  # test videos drawn in the figure


def quick_options() -> Any:
    """The reduced recipe of the quick report (well under a minute or two on 2 cores)."""
    from polyformer.recipes.video import quick_options as reduced

    return reduced()


def add_section(report: Report, quick: bool) -> None:
    from polyformer.recipes.video import VideoDigitsOptions, train_video_digits

    section = report.section("Video: TimeSformer trained here on moving digits")
    options = quick_options() if quick else VideoDigitsOptions(threads=None)
    # a fresh folder each time: a report rebuilt with other settings must not resume an old run
    with tempfile.TemporaryDirectory(prefix="polyformer-demo-video-") as folder:
        result = train_video_digits(options, Path(folder) / "video-digits", progress=False)
    m = result.metrics
    section.text(
        f"Each video shows an MNIST digit sliding {options.geometry.step} pixels a frame up, down, left or right "
        f"over {options.num_frames} frames of {options.image_size}x{options.image_size} pixels; the canvas wraps "
        "around and the clip makes one full turn, so every frame — and even the set of frames — is the same whatever "
        "the direction: only their order tells it. Three TimeSformers of "
        f"{options.n_layers} blocks of width {options.d_model} were trained from scratch for {options.steps} steps "
        f"of {options.batch_size} videos each, one per attention type, and tested on {m['test_videos']} videos of "
        f"digits never seen in training (chance {m['chance']:.0%}). Space-only attention treats each frame alone and "
        "averages the frames' predictions, so it cannot see motion."
        + (" Quick mode: a reduced run (fewer digits, steps and test videos); `polyformer train video-digits` runs "
           "the full recipe." if quick else "")
    )
    _results_table(section, result)
    _frames_figure(report, section, result)
    section.code("polyformer train video-digits --out runs/video-digits\n"
                 "polyformer classify-video VIDEO.gif --model runs/video-digits")


def _results_table(section: Section, result: Any) -> None:
    rows = [[kind, run.test_accuracy, f"{1000 * run.seconds_per_step:.1f}", run.steps, f"{run.train_seconds:.0f}",
             f"{run.parameters:,}"] for kind, run in result.runs.items()]
    section.table(["attention type", "held-out accuracy", "ms per step (median)", "steps", "seconds", "parameters"],
                  rows)
    section.text("Time per step is the median wall time of one optimiser step (forward, backward, update) in this "
                 "run, on this machine's CPU; at this size (16 patches a frame) joint attention over all "
                 f"{result.model.config.num_frames * result.model.config.num_patches + 1} tokens is still cheap — "
                 "its quadratic cost grows with frames and patches (see the cost-of-attention section).")


def _predict(model: Any, videos: np.ndarray) -> np.ndarray:
    import torch

    from polyformer.data.moving_digits import to_pixel_values

    with torch.no_grad():
        return model(to_pixel_values(videos, model.config.num_channels)).logits.argmax(-1).numpy()


def _frames_figure(report: Report, section: Section, result: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from polyformer.data.moving_digits import DIRECTIONS

    # one test video of each direction
    picks = [int(np.flatnonzero(result.test_labels == d)[0]) for d in range(len(DIRECTIONS))
             if (result.test_labels == d).any()][:SHOWN_VIDEOS]
    videos = result.test_videos[picks]
    first = next(iter(result.runs))
    predictions = {first.replace("_space_time", ""): _predict(result.model, videos)}
    if "space_only" in result.models and first != "space_only":
        predictions["space-only"] = _predict(result.models["space_only"], videos)
    frames = videos.shape[1]
    fig, axes = plt.subplots(len(picks), frames, figsize=(1.1 * frames + 2.2, 1.2 * len(picks)), squeeze=False)
    for row, index in enumerate(picks):
        for t in range(frames):
            ax = axes[row, t]
            ax.imshow(videos[row, t], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"frame {t}", fontsize=8)
        said = ", ".join(f"{name}: {DIRECTIONS[int(p[row])]}" for name, p in predictions.items())
        axes[row, -1].text(1.08, 0.5, f"true: {DIRECTIONS[int(result.test_labels[index])]}\n{said}",
                           transform=axes[row, -1].transAxes, fontsize=8, va="center")
    fig.tight_layout()
    fig.savefig(report.path("video_digits_frames.png"), dpi=100)
    plt.close(fig)
    section.figure("video_digits_frames.png", "test videos frame by frame: the true direction and the predictions")
