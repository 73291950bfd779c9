"""``polyformer train clip-shapes``: a small CLIP trained from scratch on coloured shapes (:mod:`polyformer.recipes.clip`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from polyformer.commands.train import train_group


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    recipes = train_group(subparsers)  # the `polyformer train` group, shared with the other recipes
    parser = recipes.add_parser(
        "clip-shapes", help="train a small CLIP on coloured shapes; zero-shot accuracy on held-out combinations",
        description="Train CLIP from scratch on the easy-VQA shapes (pip install --no-deps easy-vqa) with four "
        "colour x shape combinations held out, then report zero-shot accuracy over the 24 classes, the prompt "
        "ensemble and linear probes. Running the same command again resumes the run in --out.")
    parser.add_argument("--out", type=Path, default=Path("runs/clip-shapes"),
                        help="model folder to write (default runs/clip-shapes)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=None, help="image-caption pairs per step")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--d-model", type=int, default=None, help="width of both towers")
    parser.add_argument("--layers", type=int, default=None, help="layers of each tower")
    parser.add_argument("--patch-size", type=int, default=None, help="patch side in pixels")
    parser.add_argument("--attention", default=None, help="attention mechanism of both towers (default dense)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    parser.add_argument("--time-budget", type=float, default=None, help="stop training after this many seconds")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_train_clip)


def run_train_clip(args: argparse.Namespace) -> int:
    from polyformer.recipes.clip import CLIPShapesOptions, train_clip_shapes

    names = {"steps": "steps", "batch_size": "batch_size", "lr": "lr", "d_model": "d_model", "n_layers": "layers",
             "patch_size": "patch_size", "attention": "attention", "threads": "threads",
             "time_budget_s": "time_budget", "seed": "seed"}
    values = {field: getattr(args, arg) for field, arg in names.items() if getattr(args, arg) is not None}
    if "d_model" in values:  # keep CLIP's 4x MLP and a shared space as wide as the towers
        values.setdefault("d_ff", 4 * values["d_model"])
        values.setdefault("projection_dim", values["d_model"])
    result = train_clip_shapes(CLIPShapesOptions(**values), args.out, progress=not args.quiet)
    m = result.metrics
    print(f"clip-shapes: zero-shot accuracy {m['zero_shot_accuracy']:.3f} over 24 classes (chance {m['chance']:.3f}), "
          f"{m['zero_shot_held_out_accuracy']:.3f} on the {m['held_out_test_images']} test images of held-out "
          f"combinations; prompt ensemble ({m['ensemble_via']}) {m['ensemble_accuracy']:.3f} / "
          f"{m['ensemble_held_out_accuracy']:.3f}; linear probe {m['probe_accuracy']:.3f}, colour + shape probes "
          f"{m['factored_probe_accuracy']:.3f} / {m['factored_probe_held_out_accuracy']:.3f} held out")
    print(f"{m['steps']} steps in {m['train_seconds']:.0f} s of training ({m['total_seconds']:.0f} s in all, "
          f"{m['threads']} threads); model and processor written to {args.out}")
    for row in m["held_out"]:
        print(f"  held out {row['combination']:<16} {row['test_images']:3d} images  zero-shot "
              f"{row['zero_shot_accuracy']:.2f}  most chosen: {row['most_chosen']}")
    print(f"try: polyformer clip classify IMAGE --model {args.out} --labels 'red circle' 'blue triangle'")
    return 0
