"""Coloured shapes for image-text training: the easy-VQA images with labels and captions.

The ``easy-vqa`` package ships 4,000 training and 1,000 test images (64x64 RGB PNG), each one
shape (circle, rectangle, triangle) in one of eight colours on a light background, with questions
about them (``"what color is the triangle?" -> "blue"``, ``"is there not a red shape?" -> "no"``).
It has no label file. The questions alone do not always decide (an image asked only "is there a
yellow shape?" -> "no" could be any of seven colours), so the labels are read from the pixels —
the shape's exact palette colour, and its outline (a rectangle fills its box, a triangle stands on
its base) — and then checked against every question-answer pair, each of which says an attribute
is, or is not, some value. An image that is not exactly one of the 3 shapes x 8 colours, or whose
questions disagree with its pixels, stops loading with a DataError.

From the labels, :func:`captions` writes captions in varied wordings (``"a photo of a red
circle"``, ``"a triangle that is teal"`` ...), drawn with a seeded generator; and
:func:`hold_out` removes four colour x shape combinations (:data:`HELD_OUT`) from training. Those
combinations stay in the test set, so a contrastive model's zero-shot accuracy on them measures
whether it composes a colour and a shape it has only seen apart.

Install the data with ``pip install --no-deps easy-vqa`` (its declared dependencies are not
needed to read the files).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from polyformer.errors import ConfigError, DataError

__all__ = ["CAPTION_TEMPLATES", "CLASS_NAMES", "COLORS", "HELD_OUT", "SHAPES", "ShapeSet", "captions", "class_index",
           "hold_out", "load_shapes"]

COLORS = ("red", "green", "blue", "yellow", "teal", "brown", "gray", "black")
SHAPES = ("circle", "rectangle", "triangle")
#: class ``c * len(SHAPES) + s`` is colour ``c`` and shape ``s``: "red circle", "red rectangle", ...
CLASS_NAMES = tuple(f"{color} {shape}" for color in COLORS for shape in SHAPES)

#: Colour x shape combinations kept out of training. Each colour and each shape still appears in
#: training in other combinations (every colour with two of the three shapes at least), and the
#: four cover every shape, so a model can only name them by composing what it learnt separately.
HELD_OUT = (("red", "circle"), ("blue", "rectangle"), ("yellow", "triangle"), ("gray", "circle"))

#: Caption wordings; ``{color}`` and ``{shape}`` are filled from an image's labels.
CAPTION_TEMPLATES = (
    "a {color} {shape}",
    "a photo of a {color} {shape}",
    "a picture of a {color} {shape}",
    "an image of a {color} {shape}",
    "a {color} {shape} on a light background",
    "a {shape} that is {color}",
    "a {shape} coloured {color}",
    "the {shape} is {color}",
    "there is a {color} {shape} in the image",
    "one {color} {shape}",
    "a drawing of a {color} {shape}",
    "a simple {color} {shape}",
)

PIP_HINT = "pip install --no-deps easy-vqa"


@dataclass(frozen=True)
class ShapeSet:
    """Images (N, 64, 64, 3) uint8 with their colour and shape indices (N,) into COLORS / SHAPES."""

    images: np.ndarray
    colors: np.ndarray
    shapes: np.ndarray
    ids: np.ndarray  # the easy-VQA image ids (file names without .png)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def classes(self) -> np.ndarray:
        """Class index of every image: ``color * len(SHAPES) + shape`` (see :data:`CLASS_NAMES`)."""
        return self.colors * len(SHAPES) + self.shapes

    def take(self, index: np.ndarray) -> "ShapeSet":
        """The images at ``index`` (an index array or a boolean mask)."""
        return ShapeSet(self.images[index], self.colors[index], self.shapes[index], self.ids[index])

    def is_held_out(self, combinations: Sequence[tuple[str, str]] = HELD_OUT) -> np.ndarray:
        """Boolean mask of the images whose (colour, shape) is one of ``combinations``."""
        held = {class_index(color, shape) for color, shape in combinations}
        return np.isin(self.classes, sorted(held))


def class_index(color: str, shape: str) -> int:
    """The class of ``color`` and ``shape`` (names as in COLORS / SHAPES)."""
    if color not in COLORS or shape not in SHAPES:
        raise ConfigError(f"unknown colour/shape {color!r}/{shape!r}; colours: {', '.join(COLORS)}; "
                          f"shapes: {', '.join(SHAPES)}")
    return COLORS.index(color) * len(SHAPES) + SHAPES.index(shape)


def hold_out(train: ShapeSet, combinations: Sequence[tuple[str, str]] = HELD_OUT) -> ShapeSet:
    """``train`` without the images of the held-out ``combinations`` (the test set keeps them)."""
    return train.take(~train.is_held_out(combinations))


def captions(colors: np.ndarray, shapes: np.ndarray, per_image: int = 1, seed: int = 0,
             templates: Sequence[str] = CAPTION_TEMPLATES) -> list[list[str]]:
    """``per_image`` captions for every image, each in a template drawn at random (seeded; the
    captions of one image use different templates while there are enough)."""
    if per_image < 1:
        raise ConfigError(f"captions: per_image must be at least 1, got {per_image}")
    if not templates:
        raise ConfigError("captions: give at least one template")
    generator = np.random.default_rng(seed)
    out = []
    for color, shape in zip(colors.tolist(), shapes.tolist()):
        order = generator.permutation(len(templates))
        picks = [order[k % len(templates)] for k in range(per_image)]
        out.append([templates[t].format(color=COLORS[color], shape=SHAPES[shape]) for t in picks])
    return out


# ------------------------------------------------------------------------------------------------
# Labels: read from the pixels, checked against the questions
# ------------------------------------------------------------------------------------------------
#: The exact RGB of each colour as easy-VQA paints it (CSS named colours; edges are anti-aliased
#: blends, so only the shape's interior has exactly this value).
PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 128, 128), (165, 42, 42),
                    (128, 128, 128), (0, 0, 0)], dtype=np.int32)
_PALETTE_KEYS = (PALETTE[:, 0] << 16) | (PALETTE[:, 1] << 8) | PALETTE[:, 2]
_WORD = re.compile(r"[a-z]+")


def _facts(question: str, answer: str) -> list[tuple[str, str, bool]]:
    """What one question-answer pair says: (attribute, value, holds) triples.

    A "what ..." question's answer is a colour or a shape that holds, and a colour or shape named
    in the question holds too ("what color is the triangle?" says the shape is a triangle). A yes/no
    question names one value; it holds when the answer is "yes" and the question is not negated
    ("is there not a red shape?" -> "no" says the colour is red).
    """
    words = _WORD.findall(question.lower())
    named = [("color", w) for w in words if w in COLORS] + [("shape", w) for w in words if w in SHAPES]
    answer = answer.strip().lower()
    if answer in ("yes", "no"):
        negated = "not" in words or "no" in words
        holds = (answer == "yes") != negated
        return [(attribute, value, holds) for attribute, value in named]
    facts = [(attribute, value, True) for attribute, value in named]
    if answer in COLORS:
        facts.append(("color", answer, True))
    elif answer in SHAPES:
        facts.append(("shape", answer, True))
    else:
        raise DataError(f"easy-VQA answer {answer!r} to {question!r} is neither yes/no, a colour nor a shape")
    return facts


def question_facts(questions: Sequence[str], answers: Sequence[str], image_ids: Sequence[int]
                   ) -> dict[int, list[tuple[str, str, bool]]]:
    """Every image's (attribute, value, holds) facts from its questions and answers."""
    facts: dict[int, list[tuple[str, str, bool]]] = {}
    for question, answer, image in zip(questions, answers, image_ids):
        facts.setdefault(int(image), []).extend(_facts(question, answer))
    return facts


def pixel_labels(image: np.ndarray) -> tuple[int, int] | str:
    """(colour index, shape index) read from one (64, 64, 3) image, or why it cannot be read.

    The colour is the palette colour most pixels have exactly. The shape comes from the mask of
    those pixels: a rectangle fills its bounding box (fill 1; a circle fills at most ~0.81, a
    triangle ~0.68), and easy-VQA's triangles stand on their base, so their top third is far
    narrower than their bottom third (ratio <= 1/3; a circle's is about 1).
    """
    rgb = image.astype(np.int32)
    keys = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]  # one integer per pixel
    counts = np.array([(keys == key).sum() for key in _PALETTE_KEYS])
    color = int(counts.argmax())
    if counts[color] < 4:
        return "no pixel has one of the eight colours"
    mask = keys == _PALETTE_KEYS[color]
    widths = mask.sum(axis=1)
    widths = widths[widths > 0]  # the rows the shape spans
    fill = mask.sum() / (len(widths) * int(mask.any(axis=0).sum()))
    third = max(1, len(widths) // 3)
    taper = widths[:third].mean() / widths[-third:].mean()
    if fill > 0.95:
        return color, SHAPES.index("rectangle")
    if taper < 0.5:
        return color, SHAPES.index("triangle")
    if taper > 0.6:
        return color, SHAPES.index("circle")
    return f"its shape is unclear (fill {fill:.2f} of its box, top/bottom width ratio {taper:.2f})"


def check_against_questions(labels: tuple[int, int], facts: list[tuple[str, str, bool]]) -> str | None:
    """The first question fact that contradicts ``labels``, described; None when all agree."""
    actual = {"color": COLORS[labels[0]], "shape": SHAPES[labels[1]]}
    for attribute, value, holds in facts:
        if (actual[attribute] == value) != holds:
            return (f"the pixels show a {actual['color']} {actual['shape']}, but a question says the {attribute} "
                    f"{'is' if holds else 'is not'} {value}")
    return None


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
def _package():
    try:
        return importlib.import_module("easy_vqa")
    except ImportError:
        raise DataError(f"the coloured-shapes data comes from the easy-vqa package, which is not installed; "
                        f"run `{PIP_HINT}`") from None


def _read_split(split: str) -> ShapeSet:
    from PIL import Image

    package = _package()
    questions, answers, image_ids = getattr(package, f"get_{split}_questions")()
    paths: dict[int, str] = getattr(package, f"get_{split}_image_paths")()
    if not paths:
        raise DataError(f"easy-VQA has no {split} images; reinstall it with `{PIP_HINT}`")
    facts = question_facts(questions, answers, image_ids)
    ids = np.array(sorted(paths), dtype=np.int64)
    images = np.empty((len(ids), 64, 64, 3), dtype=np.uint8)
    labels = np.empty((len(ids), 2), dtype=np.int64)
    for row, image in enumerate(ids.tolist()):
        name = f"easy-VQA {split} image {Path(paths[image]).name}"
        try:
            with Image.open(paths[image]) as opened:
                pixels = np.asarray(opened.convert("RGB"))
        except OSError as error:
            raise DataError(f"{name} cannot be read ({error}); reinstall the package with `{PIP_HINT}`") from None
        if pixels.shape != (64, 64, 3):
            raise DataError(f"{name} is {pixels.shape[1]}x{pixels.shape[0]}, not 64x64; reinstall the package "
                            f"with `{PIP_HINT}`")
        found = pixel_labels(pixels)
        if isinstance(found, str):
            raise DataError(f"{name} is not one of the 3 shapes x 8 colours: {found}")
        conflict = check_against_questions(found, facts.get(image, []))
        if conflict is not None:
            raise DataError(f"{name}: {conflict}; the package's data is not what this reader expects")
        images[row], labels[row] = pixels, found
    images.flags.writeable = False  # shared by every caller of load_shapes
    return ShapeSet(images, labels[:, 0].copy(), labels[:, 1].copy(), ids)


@lru_cache(maxsize=2)
def _cached(split: str) -> ShapeSet:
    return _read_split(split)


def load_shapes() -> tuple[ShapeSet, ShapeSet]:
    """(train, test): the 4,000 and 1,000 easy-VQA images with their colours and shapes.

    Nothing is held out here; :func:`hold_out` removes the held-out combinations from training.
    The arrays are shared between calls (read once per process): do not modify them in place.
    """
    return _cached("train"), _cached("test")
