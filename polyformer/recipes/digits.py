"""MNIST digits as the trainer's examples, made with the same processor the saved model carries.

* :func:`classification_sets` — pixel values in [-1, 1] (N, 1, 28, 28) and digit labels, for a
  ViT (task ``classification``); training batches may be shifted by a few pixels at random.
* :func:`pixel_sets` — digits resized and quantised to a k-means grey palette, as iGPT's
  ``next-pixel`` examples (start token and all but the last pixel in, every pixel predicted).

Both return ``(train, test, processor)``: the processor is what a trained model is saved with,
so that ``pipeline(task, model=folder)`` reads images exactly as training did.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from polyformer.data.mnist import MNIST
from polyformer.train.examples import ExampleSet

MNIST_MEAN, MNIST_STD = 0.5, 0.5  # the processor maps pixels to [-1, 1]
DIGIT_LABELS = {str(i): str(i) for i in range(10)}  # id2label of a digit classifier (JSON-safe keys)


def to_unit(images: np.ndarray) -> Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [-1, 1], what the saved processor produces."""
    return (torch.from_numpy(images).float().div(255.0).sub(MNIST_MEAN).div(MNIST_STD))[:, None]


def random_shift(batch: dict[str, Tensor], generator: np.random.Generator, max_shift: int) -> dict[str, Tensor]:
    """Translate each image of ``batch["pixel_values"]`` by up to ``max_shift`` pixels each way
    (the uncovered border takes the background value)."""
    x = batch["pixel_values"]
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-MNIST_MEAN / MNIST_STD)
    dy = torch.from_numpy(generator.integers(0, 2 * max_shift + 1, size=b))
    dx = torch.from_numpy(generator.integers(0, 2 * max_shift + 1, size=b))
    rows = (dy[:, None] + torch.arange(h))[:, :, None].expand(b, h, w)
    cols = (dx[:, None] + torch.arange(w))[:, None, :].expand(b, h, w)
    return {**batch, "pixel_values": padded[torch.arange(b)[:, None, None], 0, rows, cols][:, None]}


def digit_processor(image_size: int = 28) -> Any:
    """The image processor of a digit classifier: resize, scale to [0, 1], normalise to [-1, 1]."""
    from polyformer.processors import ImageProcessor

    return ImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[MNIST_MEAN],
                          image_std=[MNIST_STD])


def classification_sets(data: MNIST, max_shift: int = 0) -> tuple[ExampleSet, ExampleSet, Any]:
    """(train, test, processor) for a digit classifier; training batches shifted by up to ``max_shift``."""
    augment = partial(random_shift, max_shift=max_shift) if max_shift > 0 else None
    train = ExampleSet({"pixel_values": to_unit(data.train_images)}, torch.from_numpy(data.train_labels).long(),
                       augment=augment)
    test = ExampleSet({"pixel_values": to_unit(data.test_images)}, torch.from_numpy(data.test_labels).long())
    return train, test, digit_processor()


def digits_to_tokens(processor: Any, images: np.ndarray) -> Tensor:
    """uint8 digits (N, 28, 28) -> (N, H·W) palette tokens through the saved processor's own steps."""
    return torch.from_numpy(np.concatenate([processor(list(images[i:i + 512]), return_tensors="np")["input_ids"]
                                            for i in range(0, len(images), 512)]))


def pixel_processor(data: MNIST, image_size: int, n_colors: int, seed: int = 0) -> Any:
    """An iGPT processor whose palette is k-means over grey levels of (resized, normalised) training pixels."""
    from polyformer.processors import ImageGPTProcessor, fit_palette

    size = {"height": image_size, "width": image_size}
    plain = ImageGPTProcessor(size=size, do_color_quantize=False, image_mean=[MNIST_MEAN], image_std=[MNIST_STD])
    sample = plain(list(data.train_images[:500]), return_tensors="np")["pixel_values"]
    clusters = fit_palette(sample[:, :1].reshape(-1, 1).repeat(3, axis=1), n_colors, seed=seed, grayscale=True)
    return ImageGPTProcessor(size=size, clusters=clusters, image_mean=[MNIST_MEAN], image_std=[MNIST_STD])


def pixel_examples(pixels: Tensor, start_token: int) -> ExampleSet:
    """``next-pixel`` examples of (N, P) palette tokens: input the start token and pixels 0..P-2."""
    start = torch.full((len(pixels), 1), start_token, dtype=torch.long)
    inputs = torch.cat((start, pixels[:, :-1].long()), dim=1)  # (N, P)
    return ExampleSet({"input_ids": inputs}, pixels.long(), tokens_per_example=pixels.shape[1])


def pixel_sets(data: MNIST, image_size: int, n_colors: int, seed: int = 0) -> tuple[ExampleSet, ExampleSet, Any]:
    """(train, test, processor) of iGPT examples; the start token is ``n_colors`` (HF: vocab_size - 1)."""
    processor = pixel_processor(data, image_size, n_colors, seed)
    train = pixel_examples(digits_to_tokens(processor, data.train_images), n_colors)
    test = pixel_examples(digits_to_tokens(processor, data.test_images), n_colors)
    return train, test, processor
