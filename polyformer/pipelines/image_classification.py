"""``pipeline("image-classification", model=FOLDER)``: images in, ``[{"label", "score"}]`` out.

The output follows Hugging Face's image-classification pipeline: for one image a list of the
``top_k`` (default 5) classes sorted by score, for a list of images one such list per image.
Scores are a softmax over the classes (a sigmoid for multi-label heads or a single output, raw
logits for regression), as Hugging Face decides from the model's config.

    from polyformer import pipeline
    import pandas as pd

    image_classifier = pipeline("image-classification", model="my-vit-folder")
    preds = image_classifier("photo.jpg")
    print(pd.DataFrame(preds))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polyformer.errors import ConfigError
from polyformer.pipelines import register_pipeline
from polyformer.processors.image import ImageGPTProcessor, ImageProcessor, load_image_processor

__all__ = ["ImageClassificationPipeline", "image_batch", "load_vision_model"]

FUNCTIONS = ("softmax", "sigmoid", "none")


def load_vision_model(model: Any, processor: ImageProcessor | None, task: str) -> tuple[nn.Module, ImageProcessor]:
    """A model (loaded from a folder if a path is given) and the processor saved with it.

    There is no default processor: resizing and normalising with the wrong size or statistics
    gives confident wrong answers, so a folder without ``preprocessor_config.json`` or a loaded
    model without ``processor=`` is refused with an error that says how to provide one.
    """
    if isinstance(model, (str, Path)):
        from polyformer.models import from_pretrained
        from polyformer.processors.auto import AutoImageProcessor

        folder = Path(model)
        loaded = from_pretrained(folder)
        return loaded, processor if processor is not None else AutoImageProcessor.from_pretrained(folder)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"pipeline({task!r}): model must be a model folder or a loaded model, got {type(model).__name__}")
    if processor is None:
        raise ConfigError(
            f"pipeline({task!r}) with a loaded {type(model).__name__} needs processor=<its image processor>, e.g. "
            "polyformer.AutoProcessor.from_pretrained(folder); save it beside the model with "
            "processor.save_pretrained(folder) so the folder alone is enough"
        )
    return model.eval(), processor


def check_image_size(model: nn.Module, processor: ImageProcessor) -> None:
    """Refuse a processor whose output size is not the model's ``image_size`` (when both are fixed)."""
    size = getattr(getattr(model, "config", None), "image_size", None)
    if size is None or isinstance(processor, ImageGPTProcessor):
        return
    expected = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    out = processor.crop_size if processor.do_center_crop else processor.size if processor.do_resize else None
    if out and "height" in out and (out["height"], out["width"]) != tuple(expected):
        raise ConfigError(
            f"the processor makes {out['height']}x{out['width']} images but the model was built for "
            f"{expected[0]}x{expected[1]} (config.json image_size); save the processor the model was trained with "
            "beside it (processor.save_pretrained(folder))"
        )


def image_batch(images: Any) -> tuple[list[Any], bool]:
    """(list of images, whether the caller passed one image) — a 4-D array counts as a batch."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ConfigError("no images given: pass an image or a non-empty list of images")
        return list(images), False
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images), False
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(images), False
    return [images], True


class ImageClassificationPipeline:
    """A classifier, its processor and Hugging Face's post-processing behind one call."""

    def __init__(self, model: nn.Module, processor: ImageProcessor, *, top_k: int = 5,
                 function_to_apply: str | None = None, batch_size: int = 8) -> None:
        config = getattr(model, "config", None)
        self.id2label: dict[int, str] = dict(getattr(config, "id2label", None) or {})
        if not self.id2label:
            raise ConfigError(f"{type(model).__name__} has no id2label: image-classification needs a classifier")
        channels = getattr(config, "num_channels", None)
        if channels is not None and not isinstance(processor, ImageGPTProcessor) and processor.num_channels != channels:
            raise ConfigError(
                f"preprocessor_config.json gives {processor.num_channels}-channel images (image_mean has "
                f"{len(processor.image_mean)} values) but the model's config.json has num_channels={channels}"
            )
        check_image_size(model, processor)
        self.model, self.processor = model, processor
        self.top_k, self.batch_size = _check_top_k(top_k), batch_size
        self.function_to_apply = function_to_apply

    def _function(self, override: str | None) -> str:
        name = override or self.function_to_apply
        if name is None:
            problem = getattr(self.model.config, "problem_type", None)
            if problem == "regression":
                return "none"
            if problem == "multi_label_classification" or len(self.id2label) == 1:
                return "sigmoid"
            return "softmax"
        name = name.lower()
        if name not in FUNCTIONS:
            raise ConfigError(f"function_to_apply must be one of {', '.join(FUNCTIONS)}, got {name!r}")
        return name

    @torch.no_grad()
    def logits(self, images: list[Any]) -> np.ndarray:
        """(len(images), num_labels) float32 logits, computed ``batch_size`` images at a time."""
        rows = []
        for start in range(0, len(images), self.batch_size):
            inputs = self.processor(images[start:start + self.batch_size], return_tensors="pt")
            out = self.model(**inputs)
            rows.append(out.logits.float().cpu().numpy())
        return np.concatenate(rows)

    def __call__(self, images: Any, top_k: int | None = None, function_to_apply: str | None = None) -> list:
        """Top classes per image: ``[{"label", "score"}]`` for one image, a list of those for several."""
        batch, single = image_batch(images)
        k = min(_check_top_k(top_k if top_k is not None else self.top_k), len(self.id2label))
        function = self._function(function_to_apply)
        results = [self._postprocess(row, k, function) for row in self.logits(batch)]
        return results[0] if single else results

    def _postprocess(self, logits: np.ndarray, top_k: int, function: str) -> list[dict[str, Any]]:
        if function == "softmax":
            shifted = np.exp(logits - logits.max())
            scores = shifted / shifted.sum()
        elif function == "sigmoid":
            scores = 1.0 / (1.0 + np.exp(-logits))
        else:
            scores = logits
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [{"label": self.id2label[int(i)], "score": float(scores[i])} for i in order]


def _check_top_k(top_k: Any) -> int:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
    return top_k


@register_pipeline("image-classification")
def build_image_classification(model: Any, processor: ImageProcessor | None = None, **kwargs: Any) -> ImageClassificationPipeline:
    """``pipeline("image-classification", model=FOLDER or model, processor=None, top_k=5, batch_size=8)``."""
    model, processor = load_vision_model(model, processor, "image-classification")
    return ImageClassificationPipeline(model, processor, **kwargs)

