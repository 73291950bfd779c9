"""``polyformer classify-video VIDEO... --model DIR``: top classes of videos with a video classifier folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    classify = subparsers.add_parser("classify-video", help="top classes of videos with a video classifier folder")
    classify.add_argument("videos", nargs="+",
                          help="videos: GIF / APNG files, folders of frames, or video files (those need PyAV: "
                               "pip install av)")
    classify.add_argument("--model", required=True, type=Path,
                          help="model folder (config.json, weights, preprocessor_config.json)")
    classify.add_argument("--top-k", type=int, default=5, help="classes to show per video (default 5)")
    classify.add_argument("--num-frames", type=int, default=None, help="frames per video (default: the model's)")
    classify.add_argument("--frame-sampling-rate", type=int, default=None,
                          help="take about every k-th frame from the start, as transformers does (default: spread the "
                               "frames evenly over the whole video)")
    classify.add_argument("--json", action="store_true", help="print JSON instead of a table")
    classify.set_defaults(func=run_classify)
    _add_train_parser(subparsers)


def run_classify(args: argparse.Namespace) -> int:
    """Classify each video and print its top classes."""
    from polyformer.pipelines import pipeline

    classifier = pipeline("video-classification", model=args.model)
    results = classifier([str(p) for p in args.videos], top_k=args.top_k, num_frames=args.num_frames,
                         frame_sampling_rate=args.frame_sampling_rate)
    if args.json:
        print(json.dumps([{"video": v, "predictions": r} for v, r in zip(args.videos, results)], indent=2))
        return 0
    for video, preds in zip(args.videos, results):
        print(video)
        width = max(len(p["label"]) for p in preds)
        for p in preds:
            print(f"  {p['label']:<{width}}  {p['score']:.4f}")
    return 0


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """``polyformer train video-digits``: the TimeSformer recipe (:mod:`polyformer.recipes.video`)."""
    from polyformer.commands.train import train_group

    digits = train_group(subparsers).add_parser(
        "video-digits", help="train small TimeSformers on moving digits: divided vs joint vs space-only attention",
        description="Train a TimeSformer from scratch per attention type on synthetic videos of MNIST digits moving "
        "in one of four directions (only the order of the frames tells the direction), and report held-out "
        "accuracy and time per step of each. The first attention type's model is written to --out with its video "
        "processor (polyformer classify-video takes it); the others under it. Running again resumes.")
    digits.add_argument("--out", type=Path, default=Path("runs/video-digits"),
                        help="model folder to write (default runs/video-digits)")
    digits.add_argument("--attention-types", nargs="+", default=None,
                        choices=["divided_space_time", "joint_space_time", "space_only"],
                        help="runs to make, the first is saved in --out (default: all three, divided first)")
    digits.add_argument("--steps", type=int, default=None, help="optimiser steps per run")
    digits.add_argument("--batch-size", type=int, default=None, help="videos per step")
    digits.add_argument("--lr", type=float, default=None, help="peak learning rate")
    digits.add_argument("--d-model", type=int, default=None, help="model width (the MLP is twice as wide)")
    digits.add_argument("--layers", type=int, default=None, help="number of blocks")
    digits.add_argument("--test-videos", type=int, default=None, help="held-out videos of test digits")
    digits.add_argument("--attention", default=None, help="attention mechanism along each axis (default dense)")
    digits.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    digits.add_argument("--time-budget", type=float, default=None, help="stop each run after this many seconds")
    digits.add_argument("--seed", type=int, default=None)
    digits.add_argument("--quiet", action="store_true", help="no progress bar")
    digits.set_defaults(func=run_train_video_digits)


def run_train_video_digits(args: argparse.Namespace) -> int:
    """Run the recipe and print each attention type's accuracy and time per step."""
    from polyformer.recipes.video import VideoDigitsOptions, train_video_digits

    names = {"attention_types": "attention_types", "steps": "steps", "batch_size": "batch_size", "lr": "lr",
             "d_model": "d_model", "n_layers": "layers", "test_videos": "test_videos", "attention": "attention",
             "threads": "threads", "time_budget_s": "time_budget", "seed": "seed"}
    values = {field: getattr(args, arg) for field, arg in names.items() if getattr(args, arg) is not None}
    if "d_model" in values:
        values.setdefault("d_ff", 2 * values["d_model"])
    result = train_video_digits(VideoDigitsOptions(**values), args.out, progress=not args.quiet)
    m = result.metrics
    print(f"video-digits: {m['test_videos']} held-out videos of test digits, 4 directions (chance {m['chance']:.2f}), "
          f"{m['threads']} threads")
    print(f"  {'attention type':<20} {'accuracy':>8} {'ms/step':>8} {'steps':>6} {'seconds':>8} {'parameters':>10}")
    for kind, run in result.runs.items():
        print(f"  {kind:<20} {run.test_accuracy:8.3f} {1000 * run.seconds_per_step:8.1f} {run.steps:6d} "
              f"{run.train_seconds:8.1f} {run.parameters:10,d}")
    print(f"model and processor written to {args.out}; try: polyformer classify-video VIDEO.gif --model {args.out}")
    return 0
