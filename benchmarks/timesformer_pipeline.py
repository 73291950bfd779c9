"""Video classification throughput: polyformer's pipeline against transformers' processor + model.

One folder, written by ``transformers``: a TimeSformer-base-sized ``TimesformerForVideoClassification``
(``transformers.TimesformerConfig()``'s defaults: 12 layers, 768 wide, 8 frames of 224x224 in 16x16
patches, divided space-time attention), random weights, with TimeSformer's image processor
(``VideoMAEImageProcessor``: shortest edge 224, centre crop 224). Each call classifies ``--videos``
videos of 8 camera-sized frames (320x240 PIL images) held in memory:

* ``polyformer``: ``pipeline("video-classification", model=folder)`` — frames in, top-5 lists out;
* ``transformers``: the same frames through ``AutoImageProcessor`` (``VideoMAEImageProcessorPil``
  here: torchvision is not installed) and ``TimesformerForVideoClassification``, then the
  softmax and top 5 its video-classification pipeline applies. Its pipeline itself only reads
  video files through PyAV, so it is not called: the frames, processor and model are the ones it
  would use.

The two sides are timed alternately, call by call. The record gives videos/s for each (fastest of
``--repeats`` calls; also per CPU second), their ratio, the mean seconds per call in the processor
and in the model, and the largest score difference between the sides. ``--quick`` uses a tiny
random model and small frames (a smoke test).

    python benchmarks/timesformer_pipeline.py --threads 2
    python benchmarks/timesformer_pipeline.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from polyformer.bench.measure import PhaseClock

from polyformer.bench.measure import time_interleaved


def videos(count: int, frames: int, size: tuple[int, int], seed: int = 0) -> list[list[Any]]:
    """``count`` videos of ``frames`` RGB PIL frames of ``size`` (width, height): a square moving over noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        background = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        x, y, side = int(rng.integers(0, size[0] // 2)), int(rng.integers(0, size[1] // 2)), size[1] // 4
        clip = []
        for t in range(frames):
            frame = Image.fromarray(background)
            ImageDraw.Draw(frame).rectangle((x + 4 * t, y, x + 4 * t + side, y + side), fill=(255, 40, 40))
            clip.append(frame)
        out.append(clip)
    return out


def timesformer_folder(root: Path, quick: bool) -> Path:
    """A random ``transformers.TimesformerForVideoClassification`` (base sizes, or tiny) with its processor."""
    import transformers
    from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil

    folder = root / "timesformer"
    size = 32 if quick else 224
    if quick:
        config = transformers.TimesformerConfig(image_size=32, patch_size=8, num_frames=4, hidden_size=48,
                                                num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                                                num_labels=10)
    else:
        config = transformers.TimesformerConfig(num_labels=400)  # base sizes; Kinetics-400's class count
    torch.manual_seed(0)
    transformers.TimesformerForVideoClassification(config).save_pretrained(folder)
    VideoMAEImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=[0.45] * 3, image_std=[0.225] * 3).save_pretrained(folder)
    return folder


def transformers_side(folder: Path, clock: PhaseClock) -> Callable[[list[list[Any]]], list[Any]]:
    """transformers' processor + model + its pipeline's post-processing, one batched call per call."""
    import transformers

    processor = transformers.AutoImageProcessor.from_pretrained(str(folder))
    model = transformers.TimesformerForVideoClassification.from_pretrained(str(folder)).eval()
    preprocess = clock.wrap("processor", lambda clips: processor(clips, return_tensors="pt"))
    forward = clock.wrap("model", lambda inputs: model(**inputs))
    id2label = model.config.id2label

    @torch.no_grad()
    def classify(clips: list[list[Any]]) -> list[Any]:
        logits = forward(preprocess(clips)).logits
        out = []
        for row in logits:
            scores, ids = row.softmax(-1).topk(min(5, len(id2label)))
            out.append([{"score": s, "label": id2label[i]} for s, i in zip(scores.tolist(), ids.tolist())])
        return out

    return classify


def score_difference(ours: list[Any], theirs: list[Any]) -> float:
    """Largest |difference| between the two sides' scores of the same video and label (top 5 of each)."""
    worst = 0.0
    for a, b in zip(ours, theirs):
        mine = {r["label"]: r["score"] for r in a}
        worst = max(worst, max(abs(mine.get(r["label"], 0.0) - r["score"]) for r in b))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=2, help="videos per call (default 2)")
    parser.add_argument("--frame-size", type=int, nargs=2, default=[320, 240], metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tiny random TimeSformer, 2 videos of 4 small frames")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the folder is local: never ask the hub
    torch.set_num_threads(args.threads)
    import transformers

    import polyformer

    transformers.logging.set_verbosity_error()
    if args.quick:
        args.frame_size, args.repeats = [48, 40], 1
    with tempfile.TemporaryDirectory(prefix="timesformer-bench-") as tmp:
        started = time.perf_counter()
        folder = timesformer_folder(Path(tmp), args.quick)
        build_s = time.perf_counter() - started
        num_frames = json.loads((folder / "config.json").read_text())["num_frames"]
        clips = videos(args.videos, num_frames, tuple(args.frame_size))
        clocks = {"polyformer": PhaseClock(), "transformers": PhaseClock()}
        ours = polyformer.pipeline("video-classification", model=folder, batch_size=args.videos)
        ours.processor = clocks["polyformer"].wrap("processor", ours.processor)
        ours.model.forward = clocks["polyformer"].wrap("model", ours.model.forward)
        theirs = transformers_side(folder, clocks["transformers"])
        results: dict[str, Any] = {}
        steps = {
            "polyformer": lambda: results.__setitem__("polyformer", ours(clips)),
            "transformers": lambda: results.__setitem__("transformers", theirs(clips)),
        }
        for step in steps.values():  # warm-up, then count only the timed calls
            step()
        for clock in clocks.values():
            clock.reset()
        timings = time_interleaved(steps, repeats=args.repeats, warmup=0)
    rates = {name: args.videos / t.best for name, t in timings.items()}
    per_cpu = {name: args.videos / t.cpu_best for name, t in timings.items()}
    record: dict[str, Any] = {
        "benchmark": "timesformer_pipeline",
        "model": "tiny-random-timesformer" if args.quick else "timesformer-base-random",
        "attention_type": "divided_space_time", "videos": args.videos, "frames": num_frames,
        "frame_size": list(args.frame_size), "threads": args.threads, "repeats": args.repeats,
        "folder_build_s": round(build_s, 1),
    }
    for name in steps:
        record[f"{name}_videos_per_s"] = round(rates[name], 3)
        record[f"{name}_videos_per_cpu_s"] = round(per_cpu[name], 3)
        for phase in ("processor", "model"):
            record[f"{name}_{phase}_s_per_call"] = round(clocks[name].seconds.get(phase, 0.0) / args.repeats, 4)
    record["ratio_polyformer_vs_transformers"] = round(rates["polyformer"] / rates["transformers"], 3)
    record["ratio_cpu_polyformer_vs_transformers"] = round(per_cpu["polyformer"] / per_cpu["transformers"], 3)
    record["max_abs_score_difference"] = score_difference(results["polyformer"], results["transformers"])
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
