"""Training recipes that prove the vision models learn, on MNIST digits available offline.

* :func:`train_vit_mnist` — a small ViT trained from scratch to classify digits
  (``polyformer train vit-mnist``); reports test accuracy.
* :func:`train_igpt_mnist` — a small iGPT trained on digits quantised to a few grey levels
  (``polyformer train igpt-mnist``); reports test bits per dimension and draws completions of
  half-hidden test digits.

Both take any registered attention mechanism (``attention="bigbird"``), save a Hugging Face
folder (``config.json``, ``model.safetensors``, ``preprocessor_config.json``) plus ``metrics.json``
that the pipelines load, and stop early at ``time_budget_s`` if one is given.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyformer.attention import AttentionSpec
from polyformer.data.mnist import MNIST, load_mnist
from polyformer.files import atomic_write_text
from polyformer.options import require

__all__ = [
    "IGPTMnistOptions",
    "IGPTMnistResult",
    "ViTMnistOptions",
    "ViTMnistResult",
    "train_igpt_mnist",
    "train_vit_mnist",
]

MNIST_MEAN, MNIST_STD = 0.5, 0.5  # the processor maps pixels to [-1, 1]


# ------------------------------------------------------------------------------------------------
# A small training loop shared by both recipes
# ------------------------------------------------------------------------------------------------
def _lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on norms, biases, tokens or position tables)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "position" not in n and "wpe" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "position" not in n and "wpe" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.98))


def train_steps(
    model: nn.Module, loss_of_step: Callable[[int], Tensor], steps: int, *, lr: float, warmup: int,
    weight_decay: float, time_budget_s: float | None = None, progress: bool = True, desc: str = "train",
) -> list[tuple[int, float]]:
    """Run ``steps`` optimiser steps of ``loss_of_step(step)``; returns (step, loss) every 10 steps."""
    from tqdm.auto import tqdm

    optimizer = _optimizer(model, lr, weight_decay)
    model.train()
    history: list[tuple[int, float]] = []
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup)
        loss = loss_of_step(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 10 == 0 or step == steps - 1:
            value = float(loss.detach())
            history.append((step, value))
            bar.set_postfix(loss=f"{value:.3f}")
        if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
            break
    model.eval()
    return history


def _check_common(options: Any, name: str) -> None:
    for field_name in ("batch_size", "seed"):
        value = getattr(options, field_name)
        require(isinstance(value, int) and value >= (0 if field_name == "seed" else 1),
                f"{name}.{field_name} must be a {'non-negative' if field_name == 'seed' else 'positive'} integer, got {value!r}")
    require(options.lr > 0, f"{name}.lr must be positive, got {options.lr}")
    require(options.time_budget_s is None or options.time_budget_s > 0,
            f"{name}.time_budget_s must be positive or None, got {options.time_budget_s}")
    AttentionSpec.coerce(options.attention).build()  # unknown mechanisms and options fail now


def _write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def _to_unit(images: np.ndarray) -> Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [-1, 1], what the saved processor produces."""
    return (torch.from_numpy(images).float().div(255.0).sub(MNIST_MEAN).div(MNIST_STD))[:, None]


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
        _check_common(self, "ViTMnistOptions")
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


def _random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero padding at the background value)."""
    if max_shift == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-MNIST_MEAN / MNIST_STD)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None].expand(b, h, w)
    cols = (dx[:, None] + torch.arange(w))[:, None, :].expand(b, h, w)
    return padded[torch.arange(b)[:, None, None], 0, rows, cols][:, None]


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Fraction of ``images`` (N, C, H, W) whose top class is the label."""
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start:start + batch_size]).logits
        correct += int((logits.argmax(-1) == labels[start:start + batch_size]).sum())
    return correct / max(1, len(labels))


def train_vit_mnist(options: ViTMnistOptions | None = None, out: str | Path | None = None, *,
                    data: MNIST | None = None, progress: bool = True) -> ViTMnistResult:
    """Train a ViT on MNIST from scratch; save it to ``out`` (a Hugging Face folder) if given."""
    from polyformer.models.vit import ViTConfig, ViTForImageClassification
    from polyformer.processors import ImageProcessor

    o = options or ViTMnistOptions()
    if o.threads:
        torch.set_num_threads(o.threads)
    torch.manual_seed(o.seed)
    data = (data or load_mnist(o.source)).subset(o.train_limit, o.test_limit, seed=o.seed)
    train_x, train_y = _to_unit(data.train_images), torch.from_numpy(data.train_labels)
    test_x, test_y = _to_unit(data.test_images), torch.from_numpy(data.test_labels)
    config = ViTConfig(
        image_size=o.image_size, patch_size=o.patch_size, num_channels=1, d_model=o.d_model, n_layers=o.n_layers,
        n_heads=o.n_heads, d_ff=o.d_ff, dropout=o.dropout, attention=o.attention,
        id2label={i: str(i) for i in range(10)},
    )
    model = ViTForImageClassification(config)
    steps_per_epoch = max(1, len(train_y) // o.batch_size)
    steps = max(1, int(round(o.epochs * steps_per_epoch)))
    generator = torch.Generator().manual_seed(o.seed)
    order = torch.randperm(len(train_y), generator=generator)

    def loss_of_step(step: int) -> Tensor:
        nonlocal order
        position = (step % steps_per_epoch) * o.batch_size
        if position == 0 and step:
            order = torch.randperm(len(train_y), generator=generator)
        index = order[position:position + o.batch_size]
        return model(_random_shift(train_x[index], o.max_shift, generator), labels=train_y[index]).loss

    start = time.perf_counter()
    history = train_steps(model, loss_of_step, steps, lr=o.lr, warmup=min(o.warmup_steps, steps // 5 + 1),
                          weight_decay=o.weight_decay, time_budget_s=o.time_budget_s, progress=progress,
                          desc="vit-mnist")
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, test_x, test_y)
    processor = ImageProcessor(size={"height": o.image_size, "width": o.image_size}, image_mean=[MNIST_MEAN],
                               image_std=[MNIST_STD])
    metrics = {
        "recipe": "vit-mnist", "test_accuracy": test_accuracy, "train_seconds": round(seconds, 1),
        "steps": history[-1][0] + 1 if history else 0, "train_digits": len(train_y), "test_digits": len(test_y),
        "source": data.source, "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "options": {k: v for k, v in asdict(o).items() if k != "attention"},
        "attention": AttentionSpec.coerce(o.attention).name,
    }
    if out is not None:
        out = Path(out)
        model.save_pretrained(out)
        processor.save_pretrained(out)
        _write_metrics(out, metrics)
    return ViTMnistResult(model, processor, test_accuracy, seconds, metrics["steps"], history, metrics)


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
        _check_common(self, "IGPTMnistOptions")
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


def digits_to_tokens(processor: Any, images: np.ndarray) -> Tensor:
    """uint8 digits (N, 28, 28) -> (N, H·W) palette tokens through the saved processor's own steps."""
    return torch.from_numpy(np.concatenate([processor(list(images[i:i + 512]), return_tensors="np")["input_ids"]
                                            for i in range(0, len(images), 512)]))


@torch.no_grad()
def bits_per_dim(model: Any, tokens: Tensor, batch_size: int = 100) -> float:
    """Mean negative log2-likelihood per pixel of whole images (B, N)."""
    total = 0.0
    for start in range(0, len(tokens), batch_size):
        chunk = tokens[start:start + batch_size]
        total += float(model.image_nll(chunk)) * len(chunk)
    return total / max(1, len(tokens)) / math.log(2)


def train_igpt_mnist(options: IGPTMnistOptions | None = None, out: str | Path | None = None, *,
                     data: MNIST | None = None, progress: bool = True) -> IGPTMnistResult:
    """Train an iGPT on MNIST digits; measure test bits/dim; draw completions; save to ``out``."""
    from polyformer.models.igpt import ImageGPTConfig, ImageGPTForCausalImageModeling
    from polyformer.pipelines.image_completion import ImageCompletionPipeline, completion_grid
    from polyformer.processors import ImageGPTProcessor, fit_palette

    o = options or IGPTMnistOptions()
    if o.threads:
        torch.set_num_threads(o.threads)
    torch.manual_seed(o.seed)
    data = (data or load_mnist(o.source)).subset(o.train_limit, o.test_limit, seed=o.seed)
    size = {"height": o.image_size, "width": o.image_size}
    # The palette: k-means over grey levels of (resized, normalised) training pixels.
    plain = ImageGPTProcessor(size=size, do_color_quantize=False, image_mean=[MNIST_MEAN], image_std=[MNIST_STD])
    sample = plain(list(data.train_images[:500]), return_tensors="np")["pixel_values"]
    clusters = fit_palette(sample[:, :1].reshape(-1, 1).repeat(3, axis=1), o.n_colors, seed=o.seed, grayscale=True)
    processor = ImageGPTProcessor(size=size, clusters=clusters, image_mean=[MNIST_MEAN], image_std=[MNIST_STD])
    train_tokens = digits_to_tokens(processor, data.train_images)
    test_tokens = digits_to_tokens(processor, data.test_images)
    n_pixels = o.image_size * o.image_size
    config = ImageGPTConfig(vocab_size=o.n_colors + 1, n_positions=n_pixels, d_model=o.d_model, n_layers=o.n_layers,
                            n_heads=o.n_heads, d_ff=o.d_ff, dropout=o.dropout, attention=o.attention)
    model = ImageGPTForCausalImageModeling(config)
    generator = torch.Generator().manual_seed(o.seed)

    def loss_of_step(step: int) -> Tensor:
        index = torch.randint(0, len(train_tokens), (o.batch_size,), generator=generator)
        return model.image_nll(train_tokens[index])

    start = time.perf_counter()
    history = train_steps(model, loss_of_step, o.steps, lr=o.lr, warmup=min(o.warmup_steps, o.steps // 5 + 1),
                          weight_decay=o.weight_decay, time_budget_s=o.time_budget_s, progress=progress,
                          desc="igpt-mnist")
    seconds = time.perf_counter() - start
    test_bpd = bits_per_dim(model, test_tokens)
    completer = ImageCompletionPipeline(model, processor, num_samples=o.grid_samples, temperature=o.temperature,
                                        seed=o.seed)
    grid_images = [data.test_images[i] for i in range(min(o.grid_digits, len(data.test_images)))]
    grid = completion_grid(completer(grid_images), scale=max(1, 56 // o.image_size)) if grid_images else None
    metrics = {
        "recipe": "igpt-mnist", "test_bits_per_dim": test_bpd, "train_seconds": round(seconds, 1),
        "steps": history[-1][0] + 1 if history else 0, "train_digits": len(train_tokens),
        "test_digits": len(test_tokens), "source": data.source, "threads": torch.get_num_threads(),
        "palette": [round(float(c), 4) for c in clusters[:, 0]],
        "uniform_bits_per_dim": math.log2(o.n_colors),
        "parameters": sum(p.numel() for p in model.parameters()),
        "options": {k: v for k, v in asdict(o).items() if k != "attention"},
        "attention": AttentionSpec.coerce(o.attention).name,
    }
    if out is not None:
        out = Path(out)
        model.save_pretrained(out)
        processor.save_pretrained(out)
        _write_metrics(out, metrics)
        if grid is not None:
            grid.save(out / "completions.png")
    return IGPTMnistResult(model, processor, test_bpd, seconds, metrics["steps"], grid, history, metrics)
