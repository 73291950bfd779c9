"""Zero-shot image classification throughput: polyformer against ``transformers.pipeline`` on one folder.

Both libraries load the same CLIP folder: ViT-B/32-sized (``transformers.CLIPConfig()``'s defaults:
a 12-layer 512-wide text tower, a 12-layer 768-wide vision tower on 224x224 images in 32x32
patches), random weights, saved by ``transformers`` with OpenAI's full tokenizer and CLIP's image
processor. Each call classifies ``--images`` photo-sized images (640x480 PIL images of shapes
over noise) against ``--labels`` labels, images in and sorted ``[{"score", "label"}]`` lists out.
The two sides are timed alternately, call by call, so both see the same machine load:

* ``polyformer``: the pipeline as a user keeps it between calls (the label embeddings, computed
  on the first call, are reused: only images reach the model);
* ``polyformer_cold``: the same with the label cache emptied before every call (the text tower
  runs on every call, as on a pipeline's first call);
* ``transformers``: its pipeline at its default batch size (1: every image goes through the model
  alone, together with every label sentence);
* ``transformers_batched``: its pipeline with ``batch_size`` = the number of images.

Each record gives images/s (fastest of ``--repeats`` calls; also per CPU second, steadier on a
shared machine), the ratio polyformer / transformers, the mean seconds per call spent in the
processor (image processing and tokenizing) and in the model, and the largest score difference
from ``transformers``' pipeline. ``--quick`` uses a tiny random CLIP and a few small images
(a smoke test).

    python benchmarks/clip_pipeline.py --threads 2
    python benchmarks/clip_pipeline.py --quick
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

LABELS = ["cat", "dog", "red circle", "blue square", "car", "tree", "house", "boat", "horse", "flower", "bridge",
          "mountain"]


def photos(count: int, size: tuple[int, int], seed: int = 0) -> list[Any]:
    """``count`` RGB PIL images of ``size`` (width, height): a few filled shapes over noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
            box = (int(x), int(y), int(x + rng.integers(8, size[0] // 2)), int(y + rng.integers(8, size[1] // 2)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        out.append(image)
    return out


def clip_folder(root: Path, quick: bool) -> Path:
    """A random ``transformers.CLIPModel`` (ViT-B/32 sizes, or tiny) saved with its CLIPProcessor."""
    import transformers

    from polyformer.processors.clip_tokenizer import openai_vocabulary

    folder, bpe = root / "clip", root / "bpe"
    bpe.mkdir()
    vocab, merges = openai_vocabulary()
    (bpe / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (bpe / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(bpe), model_max_length=77)
    size = 32 if quick else 224
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": size},
                                                      crop_size={"height": size, "width": size})
    transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    if quick:
        config = transformers.CLIPConfig(
            text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
            vision_config={"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
                           "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
            projection_dim=24)
    else:
        config = transformers.CLIPConfig()  # ViT-B/32: the defaults are openai/clip-vit-base-patch32's sizes
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(folder)
    return folder


class _TimedTokenizer:
    """A tokenizer whose calls count as processor time; everything else passes through."""

    def __init__(self, tokenizer: Any, clock: PhaseClock) -> None:
        self._tokenizer, self._call = tokenizer, clock.wrap("processor", tokenizer.__call__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def instrument_ours(pipe: Any, clock: PhaseClock) -> None:
    """Processor: image processing and tokenizing; model: both towers."""
    pipe.pixel_values = clock.wrap("processor", pipe.pixel_values)
    pipe.tokenizer = _TimedTokenizer(pipe.tokenizer, clock)
    pipe.image_embeddings = clock.wrap("model", pipe.image_embeddings)
    pipe.model.get_text_features = clock.wrap("model", pipe.model.get_text_features)


def instrument_theirs(pipe: Any, clock: PhaseClock) -> None:
    """Processor: ``preprocess`` (opening the image, image processor, tokenizer); model: ``_forward``."""
    pipe.preprocess = clock.wrap("processor", pipe.preprocess)
    pipe._forward = clock.wrap("model", pipe._forward)


def score_difference(ours: list[Any], theirs: list[Any]) -> float:
    """Largest |difference| between the two sides' scores of the same image and label."""
    worst = 0.0
    for a, b in zip(ours, theirs):
        mine = {r["label"]: r["score"] for r in a}
        worst = max(worst, max(abs(mine[r["label"]] - r["score"]) for r in b))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images per call (default 32)")
    parser.add_argument("--labels", type=int, default=8, help=f"labels per call (default 8, at most {len(LABELS)})")
    parser.add_argument("--image-size", type=int, nargs=2, default=[640, 480], metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tiny random CLIP, 4 images of 64x48, one repeat")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the folder is local: never ask the hub
    torch.set_num_threads(args.threads)
    import transformers

    import polyformer

    transformers.logging.set_verbosity_error()
    if args.quick:
        args.images, args.image_size, args.repeats = 4, [64, 48], 1
    labels = LABELS[:args.labels]
    images = photos(args.images, tuple(args.image_size))
    task = "zero-shot-image-classification"
    with tempfile.TemporaryDirectory(prefix="clip-bench-") as tmp:
        started = time.perf_counter()
        folder = clip_folder(Path(tmp), args.quick)
        build_s = time.perf_counter() - started
        clocks = {side: PhaseClock() for side in ("polyformer", "polyformer_cold", "transformers",
                                                  "transformers_batched")}
        ours = polyformer.pipeline(task, model=folder, batch_size=args.images)
        cold = polyformer.pipeline(task, model=folder, batch_size=args.images)
        theirs = transformers.pipeline(task, model=str(folder))
        batched = transformers.pipeline(task, model=str(folder), batch_size=args.images)
        instrument_ours(ours, clocks["polyformer"])
        instrument_ours(cold, clocks["polyformer_cold"])
        instrument_theirs(theirs, clocks["transformers"])
        instrument_theirs(batched, clocks["transformers_batched"])
        results: dict[str, Any] = {}

        def side(name: str, call: Callable[[], Any], before: Callable[[], None] | None = None) -> Callable[[], None]:
            def run() -> None:
                if before is not None:
                    before()
                results[name] = call()
            return run

        steps = {
            "polyformer": side("polyformer", lambda: ours(images, candidate_labels=labels)),
            "polyformer_cold": side("polyformer_cold", lambda: cold(images, candidate_labels=labels),
                                    before=cold._label_cache.clear),
            "transformers": side("transformers", lambda: theirs(images, candidate_labels=labels)),
            "transformers_batched": side("transformers_batched", lambda: batched(images, candidate_labels=labels)),
        }
        for step in steps.values():  # warm-up (fills polyformer's label cache), then count only timed calls
            step()
        for clock in clocks.values():
            clock.reset()
        timings = time_interleaved(steps, repeats=args.repeats, warmup=0)
    rates = {name: args.images / t.best for name, t in timings.items()}
    per_cpu = {name: args.images / t.cpu_best for name, t in timings.items()}
    record: dict[str, Any] = {
        "benchmark": "clip_pipeline", "model": "tiny-random-clip" if args.quick else "clip-vit-b-32-random",
        "images": args.images, "labels": len(labels), "image_size": list(args.image_size), "threads": args.threads,
        "repeats": args.repeats, "folder_build_s": round(build_s, 1),
    }
    for name in steps:
        record[f"{name}_images_per_s"] = round(rates[name], 2)
        record[f"{name}_images_per_cpu_s"] = round(per_cpu[name], 2)
        for phase in ("processor", "model"):
            record[f"{name}_{phase}_s_per_call"] = round(clocks[name].seconds.get(phase, 0.0) / args.repeats, 4)
    for name in ("polyformer", "polyformer_cold"):
        record[f"ratio_{name}_vs_transformers"] = round(rates[name] / rates["transformers"], 3)
        record[f"ratio_{name}_vs_transformers_batched"] = round(rates[name] / rates["transformers_batched"], 3)
        record[f"ratio_cpu_{name}_vs_transformers"] = round(per_cpu[name] / per_cpu["transformers"], 3)
    record["max_abs_score_difference"] = max(score_difference(results[name], results[other])
                                             for name in ("polyformer", "polyformer_cold")
                                             for other in ("transformers", "transformers_batched"))
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
