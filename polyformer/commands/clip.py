"""``polyformer clip``: image search and zero-shot classification with a CLIP model folder.

* ``polyformer clip index IMAGES_DIR --model DIR [--index PATH]`` embeds the images of a folder
  (and its sub-folders) into an index on disk, with a progress bar. Running it again resumes an
  interrupted run, or adds the images that are new since; unreadable files are skipped with a
  warning and recorded. An index remembers its model: indexing with another one is refused.
* ``polyformer clip search "a red circle" [--top-k 5] [--index PATH]`` prints the images nearest
  to each text; ``--image PATH`` searches by an image instead. The model is the one the index
  was built with (``--model`` to point at it where it moved).
* ``polyformer clip classify IMAGE ... --labels cat dog [--template "a photo of a {}."]`` scores
  labels for images (the zero-shot-image-classification pipeline; repeat ``--template`` to average
  several).

Every command prints a readable table, or JSON with ``--json``. This module also adds
``polyformer train clip-shapes`` (:mod:`polyformer.recipes.clip`): a small CLIP trained from
scratch on coloured shapes, evaluated zero-shot on held-out colour x shape combinations.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from polyformer.commands.train import train_group
from polyformer.errors import ConfigError, DataError

__all__ = ["add_parser"]

DEFAULT_INDEX = Path("clip-index")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    clip = subparsers.add_parser("clip", help="image search and zero-shot classification with a CLIP folder",
                                 description=(__doc__ or "").split("\n\n")[1].replace("``", ""),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    clip.set_defaults(func=lambda args: (clip.print_help(), 2)[1])
    actions = clip.add_subparsers(dest="action", metavar="ACTION")

    index = actions.add_parser("index", help="embed a folder of images into an index (resumable)",
                               description="Example: polyformer clip index photos/ --model clip-folder --index "
                               "photos.index. Run it again to resume, or to add new images.")
    index.add_argument("images", type=Path, help="folder of images (sub-folders included)")
    index.add_argument("--model", required=True, type=Path, help="CLIP model folder with its processor")
    _index_option(index)
    index.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    index.add_argument("--shard-size", type=int, default=1024,
                       help="images per shard: a killed run loses at most one shard of work (default 1024)")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    index.set_defaults(func=run_index)

    search = actions.add_parser("search", help="images of an index nearest to texts (or to an image)",
                                description="Example: polyformer clip search 'a red circle' --top-k 5; "
                                "polyformer clip search --image query.png")
    search.add_argument("texts", nargs="*", help="texts to search for")
    search.add_argument("--image", type=Path, action="append", default=None,
                        help="search by this image instead (repeatable)")
    search.add_argument("--top-k", type=int, default=5, help="images per query (default 5)")
    _index_option(search)
    search.add_argument("--model", type=Path, default=None,
                        help="the CLIP folder the index was built with (default: the one it recorded)")
    search.add_argument("--backend", choices=["exact", "faiss"], default="exact",
                        help="exact: NumPy, fine up to a few hundred thousand images (default); faiss: needs faiss")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    search.set_defaults(func=run_search)

    classify = actions.add_parser("classify", help="score labels for images (zero-shot classification)",
                                  description="Example: polyformer clip classify cat.jpg --model clip-folder "
                                  "--labels cat dog car --template 'a photo of a {}.' --template 'a drawing of a {}.'")
    classify.add_argument("images", nargs="+", type=Path, help="image files")
    classify.add_argument("--model", required=True, type=Path, help="CLIP model folder with its processor")
    classify.add_argument("--labels", nargs="+", required=True, help="the labels to choose from")
    classify.add_argument("--template", action="append", default=None,
                          help="sentence with {} for the label (repeat to average several; default "
                          "'This is a photo of {}.')")
    classify.add_argument("--top-k", type=int, default=None, help="labels to show per image (default all)")
    classify.add_argument("--json", action="store_true", help="print JSON instead of a table")
    classify.set_defaults(func=run_classify)

    recipes = train_group(subparsers)  # the `polyformer train` group, shared with the other recipes
    shapes = recipes.add_parser(
        "clip-shapes", help="train a small CLIP on coloured shapes; zero-shot accuracy on held-out combinations",
        description="Train CLIP from scratch on the easy-VQA shapes (pip install --no-deps easy-vqa) with four "
        "colour x shape combinations held out, then report zero-shot accuracy over the 24 classes, the prompt "
        "ensemble and linear probes. Running the same command again resumes the run in --out.")
    shapes.add_argument("--out", type=Path, default=Path("runs/clip-shapes"),
                        help="model folder to write (default runs/clip-shapes)")
    shapes.add_argument("--steps", type=int, default=None, help="optimiser steps")
    shapes.add_argument("--batch-size", type=int, default=None, help="image-caption pairs per step")
    shapes.add_argument("--lr", type=float, default=None, help="peak learning rate")
    shapes.add_argument("--d-model", type=int, default=None, help="width of both towers")
    shapes.add_argument("--layers", type=int, default=None, help="layers of each tower")
    shapes.add_argument("--patch-size", type=int, default=None, help="patch side in pixels")
    shapes.add_argument("--attention", default=None, help="attention mechanism of both towers (default dense)")
    shapes.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    shapes.add_argument("--time-budget", type=float, default=None, help="stop training after this many seconds")
    shapes.add_argument("--seed", type=int, default=None)
    shapes.add_argument("--quiet", action="store_true", help="no progress bar")
    shapes.set_defaults(func=run_train_clip)


def _index_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", type=Path, default=DEFAULT_INDEX,
                        help=f"index folder (default ./{DEFAULT_INDEX})")


def _clip_pipeline(folder: Path) -> Any:
    from polyformer.pipelines import pipeline

    if not folder.is_dir():
        raise DataError(f"{folder}: no such model folder; --model takes a CLIP folder with config.json, "
                        "model.safetensors and its processor files")
    return pipeline("zero-shot-image-classification", model=folder)


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show the warnings of a run as ``warning: ...`` lines (above a progress bar, not through it)."""
    from tqdm.auto import tqdm

    def show(message: Any, category: type, *rest: Any, **kw: Any) -> None:
        tqdm.write(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def run_index(args: argparse.Namespace) -> int:
    from polyformer.retrieval import build_index, model_fingerprint

    classifier = _clip_pipeline(args.model)
    with _warnings_as_lines():
        report = build_index(args.images, args.index, classifier.embed_images, model_fingerprint(args.model),
                             model=str(args.model.resolve()), batch_size=args.batch_size,
                             shard_size=args.shard_size, progress=not args.quiet)
    if args.json:
        print(json.dumps({"index": str(report.index), "added": report.added, "total": report.total,
                          "skipped": report.skipped, "ignored": report.ignored}, indent=2, ensure_ascii=False))
        return 0
    print(f"{report.added} new image(s) embedded; the index at {report.index} holds {report.total} image(s)")
    if report.skipped:
        print(f"{len(report.skipped)} file(s) could not be read and are not in the index (they are tried again "
              "once they change):")
        for path, reason in sorted(report.skipped.items())[:20]:
            print(f"  {path}: {reason}")
    if report.ignored:
        print(f"{report.ignored} file(s) without an image extension were left alone")
    return 0


def run_search(args: argparse.Namespace) -> int:
    from polyformer.retrieval import ImageIndex, model_fingerprint, search_index

    if bool(args.texts) == bool(args.image):
        raise ConfigError("give texts to search for, or --image PATH to search by an image (not both)")
    index = ImageIndex.open(args.index)
    folder = args.model if args.model is not None else Path(index.manifest.model or "")
    if args.model is None and not folder.is_dir():
        raise DataError(f"the index at {args.index} was built with {index.manifest.model}, which is not there "
                        "any more; pass --model with that model's folder")
    index.check_model(model_fingerprint(folder), str(folder))
    classifier = _clip_pipeline(folder)
    if args.image:
        queries = [str(p) for p in args.image]
        vectors = classifier.embed_images(queries)
    else:
        queries = list(args.texts)
        with _warnings_as_lines():
            vectors = classifier.embed_texts(queries)
    results = search_index(index, vectors, top_k=args.top_k, backend=args.backend)
    if args.json:
        print(json.dumps([{"query": q, "results": [{"path": h.path, "score": h.score} for h in hits]}
                          for q, hits in zip(queries, results)], indent=2, ensure_ascii=False))
        return 0
    for query, hits in zip(queries, results):
        print(query)
        for rank, hit in enumerate(hits, start=1):
            print(f"  {rank:>3}  {hit.score:.4f}  {hit.path}")
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from polyformer.pipelines.zero_shot_image_classification import DEFAULT_TEMPLATE

    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k must be a positive integer, got {args.top_k}")
    classifier = _clip_pipeline(args.model)
    with _warnings_as_lines():
        results = classifier([str(p) for p in args.images], candidate_labels=args.labels,
                             hypothesis_template=args.template or DEFAULT_TEMPLATE)
    results = [r[:args.top_k] for r in results]
    if args.json:
        print(json.dumps([{"image": str(p), "predictions": r} for p, r in zip(args.images, results)], indent=2,
                         ensure_ascii=False))
        return 0
    for path, predictions in zip(args.images, results):
        print(path)
        width = max(len(p["label"]) for p in predictions)
        for p in predictions:
            print(f"  {p['label']:<{width}}  {p['score']:.4f}")
    return 0


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
