"""A small CLIP trained from scratch on coloured shapes, and what it learnt (``polyformer train clip-shapes``).

The data are the easy-VQA images (:mod:`polyformer.data.shapes`: 3 shapes x 8 colours, 64x64),
each paired with captions in varied wordings made from its labels ("a triangle that is teal",
"there is a red rectangle in the image" ...); four colour x shape combinations never appear in
training (:data:`~polyformer.data.shapes.HELD_OUT`). Both towers are tiny; the text tower uses the
exact CLIP tokenizer (its 49,408-row embedding costs little at this width, and the saved folder
then reads any text as CLIP does). Training is the one trainer's ``contrastive`` task (CLIP's
symmetric loss, temperature clamped after every step).

Evaluation on the 1,000 test images, over all 24 colour x shape classes (chance 1/24):

* zero-shot: each class written as "a photo of a red circle", the closest caption wins — overall,
  on the held-out combinations and on the others;
* prompt ensembling: the class's text embedding averaged over :data:`ENSEMBLE_TEMPLATES`, through
  ``pipeline("zero-shot-image-classification")`` on the saved folder when that pipeline exists;
* linear probes on the image embeddings (logistic regression): one over the 24 classes trained
  on every training image (held-out combinations included: how much the image embedding holds),
  and one colour probe plus one shape probe trained without the held-out combinations (which,
  like zero-shot, must compose them).

With ``out`` the run writes a Hugging Face folder (``config.json``, ``model.safetensors``, the
tokenizer files, ``preprocessor_config.json``) that the zero-shot pipeline takes as it is, plus
``metrics.json``; the trainer's run stays in ``out/training`` (running again resumes it).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from polyformer.attention import AttentionSpec
from polyformer.data.shapes import (
    CLASS_NAMES, COLORS, HELD_OUT, SHAPES, ShapeSet, captions, hold_out, load_shapes,
)
from polyformer.options import require
from polyformer.recipes.common import (
    RunFolder, attention_config, check_common_options, recipe_train_config, train_with_history, write_metrics,
)
from polyformer.train import ModelSpec
from polyformer.train.examples import ExampleSet
from polyformer.train.export import export_model

__all__ = ["CLIPShapesOptions", "CLIPShapesResult", "ENSEMBLE_TEMPLATES", "ZERO_SHOT_TEMPLATE", "evaluate_shapes",
           "pair_sets", "shapes_pair_sets", "shapes_processor", "train_clip_shapes"]

#: The single prompt of plain zero-shot classification ("a photo of a red circle").
ZERO_SHOT_TEMPLATE = "a photo of a {}"
#: Prompts whose text embeddings are averaged per class (CLIP's prompt ensembling). The label
#: "red circle" fills ``{}``; the last three wordings are not among the training captions.
ENSEMBLE_TEMPLATES = ("a photo of a {}", "a picture of a {}", "an image of a {}", "a {}", "a drawing of a {}",
                      "a {} on a light background", "a small {}", "a photo of the {}", "a rendering of a {}")


@dataclass
class CLIPShapesOptions:
    """A small CLIP for 64x64 shapes; both towers share ``d_model`` / ``n_layers`` / ``n_heads`` / ``d_ff``.

    ``patch_size`` 8 gives 64 patches (+ the class token); ``context`` text positions (the longest
    caption is 10 tokens). ``captions_per_image`` wordings are written per image; each time an
    image is in a batch one of them is drawn, and the image is mirrored (``flip``) and moved by up
    to ``max_shift`` pixels at random (:func:`augment_pairs`: without that the image tower ties
    shape to colour, and the held-out combinations suffer). ``steps`` optimiser steps of
    ``batch_size`` pairs, AdamW with ``lr`` / ``weight_decay``, cosine after ``warmup_steps``.
    ``held_out``: the colour x shape combinations removed from training. ``threads`` for torch,
    ``time_budget_s`` to stop early.
    """

    image_size: int = 64
    patch_size: int = 8
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    projection_dim: int = 64
    context: int = 16
    captions_per_image: int = 8
    flip: bool = True
    max_shift: int = 6
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    dropout: float = 0.0
    attention: Any = "dense"
    held_out: tuple[tuple[str, str], ...] = HELD_OUT
    seed: int = 0
    threads: int | None = 2
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        check_common_options(self, "CLIPShapesOptions")
        require(self.steps >= 1, f"CLIPShapesOptions.steps must be positive, got {self.steps}")
        require(self.image_size % self.patch_size == 0,
                f"CLIPShapesOptions.patch_size ({self.patch_size}) must divide image_size ({self.image_size})")
        require(12 <= self.context <= 77, f"CLIPShapesOptions.context must be in [12, 77] (the longest caption "
                                          f"is 10 tokens; CLIP reads 77), got {self.context}")
        require(self.captions_per_image >= 1, "CLIPShapesOptions.captions_per_image must be at least 1")
        require(isinstance(self.max_shift, int) and 0 <= self.max_shift < self.image_size // 2,
                f"CLIPShapesOptions.max_shift must be an integer in [0, {self.image_size // 2}), "
                f"got {self.max_shift!r}")
        self.held_out = tuple((str(c), str(s)) for c, s in self.held_out)
        for color, shape in self.held_out:
            require(color in COLORS and shape in SHAPES, f"CLIPShapesOptions.held_out: unknown combination "
                                                          f"{color!r} {shape!r}")


@dataclass
class CLIPShapesResult:
    """The trained model, its processor and what was measured (see :func:`evaluate_shapes`)."""

    model: Any
    processor: Any
    metrics: dict[str, Any]
    train_seconds: float
    steps: int
    history: list[tuple[int, float]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
def shapes_processor(image_size: int = 64, context: int = 16) -> Any:
    """CLIP's processor (exact tokenizer, CLIP's image preprocessing) at ``image_size``, reading at
    most ``context`` tokens (so the saved folder truncates texts where the model's context ends)."""
    from polyformer.processors.clip import CLIPProcessor

    processor = CLIPProcessor.from_openai_bpe(image_size=image_size)
    processor.tokenizer.model_max_length = context
    return processor


def augment_pairs(batch: dict[str, Tensor], generator: np.random.Generator, flip: bool = False,
                  max_shift: int = 0) -> dict[str, Tensor]:
    """Training batches hold every caption of an image (B, K, T); keep one drawn at random (B, T).

    With ``flip``, half the images are mirrored left to right; with ``max_shift``, each image moves
    by up to that many pixels each way, the border filled with its own edge (the background). A
    mirrored or moved shape is the same shape of the same colour, and the patch grid cuts it
    differently each time.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    b = len(ids)
    rows = torch.arange(b)
    pick = torch.from_numpy(generator.integers(0, ids.shape[1], size=b))
    out = {**batch, "input_ids": ids[rows, pick], "attention_mask": mask[rows, pick]}
    pixels = batch["pixel_values"]
    if flip:
        mirrored = torch.from_numpy(generator.random(b) < 0.5)
        pixels = torch.where(mirrored[:, None, None, None], pixels.flip(-1), pixels)
    if max_shift > 0:
        _, c, h, w = pixels.shape
        padded = F.pad(pixels, (max_shift,) * 4, mode="replicate")
        dy = torch.from_numpy(generator.integers(0, 2 * max_shift + 1, size=b))
        dx = torch.from_numpy(generator.integers(0, 2 * max_shift + 1, size=b))
        y = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, c, h, w)
        x = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, c, h, w)
        pixels = padded[rows[:, None, None, None], torch.arange(c)[None, :, None, None], y, x]
    out["pixel_values"] = pixels
    return out


def _tokens(processor: Any, texts: list[str], context: int) -> dict[str, Tensor]:
    encoded = processor.tokenizer(texts, padding="max_length", truncation=True, max_length=context,
                                  return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def pixel_values(processor: Any, shapes: ShapeSet) -> Tensor:
    """The images as the processor prepares them (N, 3, H, W) — what the saved folder will do."""
    return processor.image_processor(list(shapes.images), return_tensors="pt")["pixel_values"]


def pair_sets(processor: Any, train: ShapeSet, test: ShapeSet, captions_per_image: int = 8, context: int = 16,
              seed: int = 0, flip: bool = False, max_shift: int = 0) -> tuple[ExampleSet, ExampleSet]:
    """(train, test) examples of the ``contrastive`` task: pixel values, tokenised captions and the
    class as ``labels``. A training example holds ``captions_per_image`` captions (one is drawn per
    batch, and the image mirrored and moved at random, see :func:`augment_pairs`); a test example one caption."""
    k = captions_per_image
    texts = [c for row in captions(train.colors, train.shapes, k, seed) for c in row]
    tokens = {name: value.reshape(len(train), k, context) for name, value in _tokens(processor, texts, context).items()}
    train_set = ExampleSet({"pixel_values": pixel_values(processor, train), **tokens},
                           torch.from_numpy(train.classes),
                           augment=partial(augment_pairs, flip=flip, max_shift=max_shift))
    test_texts = [row[0] for row in captions(test.colors, test.shapes, 1, seed + 1)]
    test_set = ExampleSet({"pixel_values": pixel_values(processor, test), **_tokens(processor, test_texts, context)},
                          torch.from_numpy(test.classes))
    return train_set, test_set


def shapes_pair_sets(captions_per_image: int = 8, context: int = 16, image_size: int = 64, seed: int = 0,
                     flip: bool = False, max_shift: int = 0, train_limit: int | None = None,
                     test_limit: int | None = None) -> tuple[ExampleSet, ExampleSet, Any]:
    """``(train, test, processor)`` of the ``shapes`` data of a sweep (built into a task's data by
    :func:`polyformer.train.data.load_task_data`): :func:`pair_sets` on the easy-VQA shapes with the
    held-out combinations removed from training, and random subsets of ``train_limit`` /
    ``test_limit`` images (all when None) drawn with ``seed``."""
    every_train, test = load_shapes()
    generator = np.random.default_rng(seed)
    kept = hold_out(every_train)
    train = kept.take(generator.permutation(len(kept))[:train_limit])
    test = test.take(generator.permutation(len(test))[:test_limit])
    processor = shapes_processor(image_size, context)
    train_set, test_set = pair_sets(processor, train, test, captions_per_image, context, seed, flip, max_shift)
    return train_set, test_set, processor


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def image_embeddings(model: Any, pixels: Tensor, batch_size: int = 250) -> Tensor:
    """Unit-length image embeddings (N, projection_dim) of prepared ``pixels``."""
    parts = [model.get_image_features(pixel_values=pixels[i : i + batch_size]).pooler_output
             for i in range(0, len(pixels), batch_size)]
    return F.normalize(torch.cat(parts).float(), dim=-1)


@torch.no_grad()
def class_embeddings(model: Any, processor: Any, labels: Sequence[str], templates: Sequence[str]) -> Tensor:
    """One unit vector per label: its prompts' unit text embeddings averaged, then renormalised
    (with one template, simply the prompt's embedding) — CLIP's prompt ensembling."""
    texts = [template.format(label) for label in labels for template in templates]
    encoded = processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    features = model.get_text_features(input_ids=encoded["input_ids"],
                                       attention_mask=encoded["attention_mask"]).pooler_output
    features = F.normalize(features.float(), dim=-1).reshape(len(labels), len(templates), -1)
    return F.normalize(features.mean(dim=1), dim=-1)


def _accuracies(predicted: np.ndarray, classes: np.ndarray, held: np.ndarray, name: str) -> dict[str, float]:
    """Accuracy overall, on the held-out combinations and on the combinations seen in training."""
    right = predicted == classes
    return {f"{name}_accuracy": float(right.mean()),
            f"{name}_held_out_accuracy": float(right[held].mean()) if held.any() else float("nan"),
            f"{name}_seen_accuracy": float(right[~held].mean()) if (~held).any() else float("nan")}


def _standardised(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
    return (train - mean) / std, (test - mean) / std


def fit_linear_probe(x: np.ndarray, y: np.ndarray, classes: int, l2: float = 1e-3) -> Any:
    """Multinomial logistic regression (a linear layer, cross-entropy + ``l2`` times the squared
    weights) fitted to convergence by full-batch L-BFGS from zero weights: the problem is convex,
    so the fit is deterministic. Returns ``predict(x) -> classes``."""
    inputs, targets = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    layer = torch.nn.Linear(inputs.shape[1], classes)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimiser = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=500, tolerance_grad=1e-6,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(layer(inputs), targets) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)

    @torch.no_grad()
    def predict(features: np.ndarray) -> np.ndarray:
        return layer(torch.from_numpy(features).float()).argmax(dim=1).numpy()

    return predict


def linear_probes(train_embeds: np.ndarray, train: ShapeSet, test_embeds: np.ndarray, test: ShapeSet,
                  held_out: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Linear probes (:func:`fit_linear_probe`) on standardised image embeddings, scored on the test images.

    ``probe``: 24 classes, trained on every training image (held-out combinations included, so
    it is an upper reference, not a zero-shot result). ``factored_probe``: a colour probe and a
    shape probe trained without the held-out combinations; their pair is the prediction.
    """
    held = test.is_held_out(held_out)
    x_train, x_test = _standardised(train_embeds, test_embeds)
    probe = fit_linear_probe(x_train, train.classes, len(CLASS_NAMES))
    out = _accuracies(probe(x_test), test.classes, held, "probe")
    seen = ~train.is_held_out(held_out)
    colors = fit_linear_probe(x_train[seen], train.colors[seen], len(COLORS))(x_test)
    shapes = fit_linear_probe(x_train[seen], train.shapes[seen], len(SHAPES))(x_test)
    out.update(_accuracies(colors * len(SHAPES) + shapes, test.classes, held, "factored_probe"))
    return out


def _pipeline_predictions(folder: Path, test: ShapeSet, templates: Sequence[str]) -> np.ndarray | None:
    """Classes chosen by ``pipeline("zero-shot-image-classification")`` on ``folder`` with the prompt
    ensemble; None where that pipeline is not available."""
    from polyformer.errors import ConfigError

    try:
        from PIL import Image

        from polyformer.pipelines import pipeline

        classifier = pipeline("zero-shot-image-classification", model=str(folder))
    except (ImportError, ConfigError, KeyError):
        return None
    images = [Image.fromarray(image) for image in test.images]
    results = classifier(images, candidate_labels=list(CLASS_NAMES), hypothesis_template=list(templates))
    return np.array([CLASS_NAMES.index(result[0]["label"]) for result in results])


def evaluate_shapes(model: Any, processor: Any, train: ShapeSet, test: ShapeSet,
                    held_out: Sequence[tuple[str, str]] = HELD_OUT, folder: str | Path | None = None,
                    templates: Sequence[str] = ENSEMBLE_TEMPLATES) -> dict[str, Any]:
    """Zero-shot accuracy over the 24 classes (one prompt, and the prompt ensemble), linear probes,
    and a row per held-out combination. ``train``: every training image (held-out combinations
    included; the factored probe leaves them out). ``folder``: a saved copy of the model, for the
    ensemble through the zero-shot pipeline (else the same ensembling is computed here)."""
    model.eval()
    held = test.is_held_out(held_out)
    test_embeds = image_embeddings(model, pixel_values(processor, test))
    single = class_embeddings(model, processor, CLASS_NAMES, [ZERO_SHOT_TEMPLATE])
    predicted = (test_embeds @ single.t()).argmax(dim=1).numpy()
    metrics: dict[str, Any] = _accuracies(predicted, test.classes, held, "zero_shot")

    ensemble = None if folder is None else _pipeline_predictions(Path(folder), test, templates)
    metrics["ensemble_via"] = "pipeline" if ensemble is not None else "direct"
    if ensemble is None:
        ensemble = (test_embeds @ class_embeddings(model, processor, CLASS_NAMES, templates).t()).argmax(dim=1).numpy()
    metrics.update(_accuracies(ensemble, test.classes, held, "ensemble"))

    train_embeds = image_embeddings(model, pixel_values(processor, train))
    metrics.update(linear_probes(train_embeds.numpy(), train, test_embeds.numpy(), test, held_out))

    rows = []
    for color, shape in held_out:
        mine = test.classes == COLORS.index(color) * len(SHAPES) + SHAPES.index(shape)
        guesses = np.bincount(predicted[mine], minlength=len(CLASS_NAMES))
        right = test.classes[mine]
        rows.append({"combination": f"{color} {shape}", "test_images": int(mine.sum()),
                     "zero_shot_accuracy": float((predicted[mine] == right).mean()) if mine.any() else None,
                     "ensemble_accuracy": float((ensemble[mine] == right).mean()) if mine.any() else None,
                     "most_chosen": CLASS_NAMES[int(guesses.argmax())]})
    metrics["held_out"] = rows
    metrics["chance"] = 1 / len(CLASS_NAMES)
    return metrics


# ------------------------------------------------------------------------------------------------
# The recipe
# ------------------------------------------------------------------------------------------------
def model_config(o: CLIPShapesOptions) -> dict[str, Any]:
    """The ``clip`` family's config for the options (the vocabulary comes from the tokenizer)."""
    tower = {"d_model": o.d_model, "n_layers": o.n_layers, "n_heads": o.n_heads, "d_ff": o.d_ff,
             "dropout": o.dropout, "attention": attention_config(o.attention)}
    return {"text_config": {**tower, "max_position_embeddings": o.context},
            "vision_config": {**tower, "image_size": o.image_size, "patch_size": o.patch_size},
            "projection_dim": o.projection_dim}


def train_clip_shapes(options: CLIPShapesOptions | None = None, out: str | Path | None = None, *,
                      data: tuple[ShapeSet, ShapeSet] | None = None, progress: bool = True) -> CLIPShapesResult:
    """Train a small CLIP on coloured shapes with the held-out combinations removed, evaluate it
    (:func:`evaluate_shapes`) and save it with its processor to ``out`` (a Hugging Face folder)."""
    import tempfile

    began = time.perf_counter()
    o = options or CLIPShapesOptions()
    if o.threads:
        torch.set_num_threads(o.threads)
    every_train, test = data or load_shapes()
    train = hold_out(every_train, o.held_out)
    processor = shapes_processor(o.image_size, o.context)
    train_set, test_set = pair_sets(processor, train, test, o.captions_per_image, o.context, o.seed,
                                    o.flip, o.max_shift)
    spec = ModelSpec("clip", model_config(o))
    tokens = (o.image_size // o.patch_size) ** 2 + 1 + o.context
    with RunFolder(out) as run_dir:
        config = recipe_train_config(o, o.steps, len(test_set), tokens, run_dir, progress)
        result, history = train_with_history(spec, train_set, test_set, len(processor.tokenizer), config,
                                             o.time_budget_s)
    model = result.model
    with tempfile.TemporaryDirectory(prefix="polyformer-clip-") as scratch:
        folder = Path(out) if out is not None else Path(scratch)
        export_model(model, folder, processor)  # the folder the zero-shot pipeline takes as it is
        metrics = evaluate_shapes(model, processor, every_train, test, o.held_out, folder)
    metrics.update({
        "recipe": "clip-shapes", "val_loss": result.final_val_loss,
        "val_in_batch_accuracy": result.metrics.get("val_accuracy"), "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.perf_counter() - began, 1), "steps": result.steps, "train_pairs": len(train_set),
        "test_images": len(test_set), "held_out_test_images": int(test.is_held_out(o.held_out).sum()),
        "logit_scale": float(model.logit_scale.detach().exp()), "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "options": {k: v for k, v in asdict(o).items() if k != "attention"},
        "attention": AttentionSpec.coerce(o.attention).name,
    })
    if out is not None:
        write_metrics(Path(out), metrics)
    return CLIPShapesResult(model, processor, metrics, result.seconds, result.steps, history)
