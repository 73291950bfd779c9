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
