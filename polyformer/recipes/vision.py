"""Training recipes that prove the vision models learn, on MNIST digits available offline.

* :func:`train_vit_mnist` — a small ViT trained from scratch to classify digits
  (``polyformer train vit-mnist``); reports test accuracy.
* :func:`train_igpt_mnist` — a small iGPT trained on digits quantised to a few grey levels
  (``polyformer train igpt-mnist``); reports test bits per dimension and draws completions of
  half-hidden test digits.

Both train on the one trainer (:mod:`polyformer.train`: its AdamW, warmup + cosine schedule,
clipping, checkpoints and metrics) with the family's task — ``classification`` for the ViT,
``next-pixel`` for iGPT — and take any registered attention mechanism (``attention="bigbird"``).
With ``out`` they write a Hugging Face folder (``config.json``, ``model.safetensors``,
``preprocessor_config.json``) plus ``metrics.json`` that the pipelines load directly, and keep the
trainer's run in ``out/training`` (checkpoints, ``metrics.jsonl``): running the recipe again with
the same options resumes it. ``time_budget_s`` stops training early (with a checkpoint).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from polyformer.attention import AttentionSpec
from polyformer.data.mnist import MNIST, load_mnist
from polyformer.options import require
from polyformer.recipes.common import (
    RunFolder, attention_config, check_common_options, recipe_train_config, train_with_history, write_metrics,
)
from polyformer.recipes.digits import DIGIT_LABELS, classification_sets, pixel_sets
from polyformer.train import ModelSpec

__all__ = [
    "IGPTMnistOptions",
    "IGPTMnistResult",
    "ViTMnistOptions",
    "ViTMnistResult",
    "train_igpt_mnist",
    "train_vit_mnist",
]


# ------------------------------------------------------------------------------------------------
# ViT on MNIST
# ------------------------------------------------------------------------------------------------
@dataclass
class ViTMnistOptions:
    """A small ViT for 28x28 digits: ``patch_size`` 7 gives 16 patches (+ the class token).

    ``epochs`` over the training digits (``train_limit`` / ``test_limit`` take random subsets),
    AdamW with ``lr`` / ``weight_decay``, cosine schedule after ``warmup_steps``, random shifts of
    up to ``max_shift`` pixels, ``attention`` for every layer, ``source`` of the digits
    (see :mod:`polyformer.data.mnist`), ``threads`` for torch, ``time_budget_s`` to stop early.
    """

    image_size: int = 28
    patch_size: int = 7
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 256
    epochs: float = 3.0
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    max_shift: int = 2
    dropout: float = 0.0
    attention: Any = "dense"
    source: str = "auto"
    train_limit: int | None = None
    test_limit: int | None = None
    seed: int = 0
    threads: int | None = 2
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        check_common_options(self, "ViTMnistOptions")
        require(self.epochs > 0, f"ViTMnistOptions.epochs must be positive, got {self.epochs}")
        require(0 <= self.max_shift < self.image_size // 2, f"ViTMnistOptions.max_shift must be in [0, {self.image_size // 2})")


@dataclass
class ViTMnistResult:
    """The trained model, its processor and what was measured."""

    model: Any
    processor: Any
    test_accuracy: float
    train_seconds: float
    steps: int
    history: list[tuple[int, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def train_vit_mnist(options: ViTMnistOptions | None = None, out: str | Path | None = None, *,
                    data: MNIST | None = None, progress: bool = True) -> ViTMnistResult:
    """Train a ViT on MNIST from scratch on the trainer; save it to ``out`` (a Hugging Face folder) if given."""
    o = options or ViTMnistOptions()
    if o.threads:
        torch.set_num_threads(o.threads)
    data = (data or load_mnist(o.source)).subset(o.train_limit, o.test_limit, seed=o.seed)
    train_set, test_set, processor = classification_sets(data, o.max_shift)
    spec = ModelSpec("vit", {
        "image_size": o.image_size, "patch_size": o.patch_size, "num_channels": 1, "d_model": o.d_model,
        "n_layers": o.n_layers, "n_heads": o.n_heads, "d_ff": o.d_ff, "dropout": o.dropout,
        "attention": attention_config(o.attention), "id2label": dict(DIGIT_LABELS),
    })
    steps = max(1, int(round(o.epochs * max(1, len(train_set) // o.batch_size))))
    tokens = (o.image_size // o.patch_size) ** 2 + 1  # patches and the class token
    with RunFolder(out) as run_dir:
        config = recipe_train_config(o, steps, len(test_set), tokens, run_dir, progress)
        result, history = train_with_history(spec, train_set, test_set, len(DIGIT_LABELS), config, o.time_budget_s)
    model = result.model
    metrics = {
        "recipe": "vit-mnist", "test_accuracy": result.metrics["val_accuracy"], "test_loss": result.final_val_loss,
        "train_seconds": round(result.seconds, 1), "steps": result.steps, "train_digits": len(train_set),
        "test_digits": len(test_set), "source": data.source, "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "options": {k: v for k, v in asdict(o).items() if k != "attention"},
        "attention": AttentionSpec.coerce(o.attention).name,
    }
    if out is not None:
        out = Path(out)
        model.save_pretrained(out)
        processor.save_pretrained(out)
        write_metrics(out, metrics)
    return ViTMnistResult(model, processor, metrics["test_accuracy"], result.seconds, result.steps, history, metrics)


# ------------------------------------------------------------------------------------------------
# iGPT on MNIST
# ------------------------------------------------------------------------------------------------
@dataclass
class IGPTMnistOptions:
    """A small iGPT for digits shrunk to ``image_size`` (14: 196 pixels) with ``n_colors`` grey levels.

    Training runs ``steps`` optimiser steps on batches of ``batch_size`` digits; bits per dimension
    are measured on ``test_limit`` test digits, and ``grid_digits`` test digits are completed
    ``grid_samples`` times from their top half.
    """

    image_size: int = 14
    n_colors: int = 4
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 512
    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    dropout: float = 0.0
    attention: Any = "dense"
    source: str = "auto"
    train_limit: int | None = None
    test_limit: int | None = 1000
    grid_digits: int = 8
    grid_samples: int = 4
    temperature: float = 1.0
    seed: int = 0
    threads: int | None = 2
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        check_common_options(self, "IGPTMnistOptions")
        require(2 <= self.n_colors <= 64, f"IGPTMnistOptions.n_colors must be in [2, 64], got {self.n_colors}")
        require(4 <= self.image_size <= 28, f"IGPTMnistOptions.image_size must be in [4, 28], got {self.image_size}")
        require(self.steps >= 1, f"IGPTMnistOptions.steps must be positive, got {self.steps}")


@dataclass
class IGPTMnistResult:
    """The trained model, its processor, test bits per dimension and the completion grid."""

    model: Any
    processor: Any
    test_bits_per_dim: float
    train_seconds: float
    steps: int
    grid: Any = None
    history: list[tuple[int, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def train_igpt_mnist(options: IGPTMnistOptions | None = None, out: str | Path | None = None, *,
                     data: MNIST | None = None, progress: bool = True) -> IGPTMnistResult:
    """Train an iGPT on MNIST digits on the trainer; measure test bits/dim; draw completions; save to ``out``."""
    from polyformer.pipelines.image_completion import ImageCompletionPipeline, completion_grid

    o = options or IGPTMnistOptions()
    if o.threads:
        torch.set_num_threads(o.threads)
    data = (data or load_mnist(o.source)).subset(o.train_limit, o.test_limit, seed=o.seed)
    train_set, test_set, processor = pixel_sets(data, o.image_size, o.n_colors, o.seed)
    n_pixels = o.image_size * o.image_size
    spec = ModelSpec("igpt", {
        "n_positions": n_pixels, "d_model": o.d_model, "n_layers": o.n_layers, "n_heads": o.n_heads,
        "d_ff": o.d_ff, "dropout": o.dropout, "attention": attention_config(o.attention),
    })
    with RunFolder(out) as run_dir:
        config = recipe_train_config(o, o.steps, len(test_set), n_pixels, run_dir, progress)
        # vocabulary: the palette colours and the start-of-image token
        result, history = train_with_history(spec, train_set, test_set, o.n_colors + 1, config, o.time_budget_s)
    model = result.model
    test_bpd = result.final_val_loss / math.log(2)  # nats per pixel -> bits per dimension
    completer = ImageCompletionPipeline(model, processor, num_samples=o.grid_samples, temperature=o.temperature,
                                        seed=o.seed)
    grid_images = [data.test_images[i] for i in range(min(o.grid_digits, len(data.test_images)))]
    grid = completion_grid(completer(grid_images), scale=max(1, 56 // o.image_size)) if grid_images else None
    metrics = {
        "recipe": "igpt-mnist", "test_bits_per_dim": test_bpd, "train_seconds": round(result.seconds, 1),
        "steps": result.steps, "train_digits": len(train_set), "test_digits": len(test_set), "source": data.source,
        "threads": torch.get_num_threads(),
        "palette": [round(float(c), 4) for c in processor.clusters[:, 0]],
        "uniform_bits_per_dim": math.log2(o.n_colors),
        "parameters": sum(p.numel() for p in model.parameters()),
        "options": {k: v for k, v in asdict(o).items() if k != "attention"},
        "attention": AttentionSpec.coerce(o.attention).name,
    }
    if out is not None:
        out = Path(out)
        model.save_pretrained(out)
        processor.save_pretrained(out)
        write_metrics(out, metrics)
        if grid is not None:
            grid.save(out / "completions.png")
    return IGPTMnistResult(model, processor, test_bpd, result.seconds, result.steps, grid, history, metrics)
