"""``pipeline("image-completion", model=FOLDER)``: show iGPT the top of an image, sample the rest.

Each image is quantised to the model's palette; its first ``visible`` rows (half by default) are
the prompt, and ``num_samples`` completions are sampled pixel by pixel. The result per image is a
dict of PIL images::

    {"original": quantised input, "prompt": visible rows with the rest grey, "completions": [...]}

:func:`completion_grid` draws results as one picture: a row per image with the prompt, the
completions and the original, as in the iGPT paper's figure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from polyformer.errors import ConfigError
from polyformer.pipelines import register_pipeline
from polyformer.pipelines.image_classification import image_batch, load_vision_model
from polyformer.processors.image import ImageGPTProcessor

__all__ = ["ImageCompletionPipeline", "completion_grid"]

HIDDEN_GREY = 128


class ImageCompletionPipeline:
    """An iGPT causal model, its palette processor and the sampling settings."""

    def __init__(self, model: Any, processor: ImageGPTProcessor, *, num_samples: int = 4, visible: float = 0.5,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, seed: int | None = 0) -> None:
        if not hasattr(model, "complete"):
            raise ConfigError(f"image-completion needs an iGPT causal model (ImageGPTForCausalImageModeling), got {type(model).__name__}")
        if not isinstance(processor, ImageGPTProcessor):
            raise ConfigError("image-completion needs an ImageGPTProcessor (a preprocessor_config.json with clusters)")
        if processor.n_clusters != model.config.n_clusters:
            raise ConfigError(
                f"preprocessor_config.json has {processor.n_clusters} clusters but the model's vocab_size "
                f"{model.config.vocab_size} means {model.config.n_clusters} colours (+1 start token)"
            )
        height, width = processor.image_shape
        if height * width > model.config.n_positions:
            raise ConfigError(
                f"preprocessor size {height}x{width} gives {height * width} pixels but n_positions is {model.config.n_positions}"
            )
        self.model, self.processor = model, processor
        self.defaults = dict(num_samples=num_samples, visible=visible, temperature=temperature, top_k=top_k,
                             top_p=top_p, seed=seed)

    def _settings(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ConfigError(f"unknown image-completion option(s) {unknown}; valid: {', '.join(self.defaults)}")
        settings = {**self.defaults, **overrides}
        if not 0 <= settings["visible"] < 1:
            raise ConfigError(f"visible (fraction of rows shown) must be in [0, 1), got {settings['visible']}")
        return settings

    def _generator(self, seed: int | None) -> torch.Generator | None:
        return None if seed is None else torch.Generator().manual_seed(int(seed))

    def __call__(self, images: Any, **options: Any) -> dict[str, Any] | list[dict[str, Any]]:
        """Complete each image from its visible top rows; see the module docstring for the result."""
        s = self._settings(options)
        batch, single = image_batch(images)
        height, width = self.processor.image_shape
        ids = self.processor(batch, return_tensors="pt")["input_ids"]  # (B, H·W)
        visible_pixels = int(round(s["visible"] * height)) * width
        samples = self.model.complete(
            ids[:, :visible_pixels], height * width, num_samples=s["num_samples"], temperature=s["temperature"],
            top_k=s["top_k"], top_p=s["top_p"], generator=self._generator(s["seed"]),
        ).view(len(batch), s["num_samples"], -1)
        results = []
        for image_ids, image_samples in zip(ids, samples):
            prompt = self.processor.decode(image_ids)[0]
            prompt_array = np.array(prompt)
            prompt_array.reshape(-1, 3)[visible_pixels:] = HIDDEN_GREY
            results.append({
                "original": self.processor.decode(image_ids)[0],
                "prompt": Image.fromarray(prompt_array),
                "completions": self.processor.decode(image_samples),
            })
        return results[0] if single else results

    def sample(self, num_images: int, **options: Any) -> list[Image.Image]:
        """Images sampled from nothing (the start token only)."""
        s = self._settings({**options, "num_samples": num_images})
        height, width = self.processor.image_shape
        empty = torch.zeros(1, 0, dtype=torch.long)
        ids = self.model.complete(empty, height * width, num_samples=num_images, temperature=s["temperature"],
                                  top_k=s["top_k"], top_p=s["top_p"], generator=self._generator(s["seed"]))
        return self.processor.decode(ids)


def completion_grid(results: dict[str, Any] | list[dict[str, Any]], scale: int = 4, gap: int = 2) -> Image.Image:
    """One picture: per row the prompt, the completions and the original, each enlarged ``scale`` times."""
    rows = [results] if isinstance(results, dict) else list(results)
    if not rows:
        raise ConfigError("completion_grid needs at least one result")
    cells = [[r["prompt"], *r["completions"], r["original"]] for r in rows]
    w, h = cells[0][0].size
    cw, ch = w * scale, h * scale
    columns = max(len(c) for c in cells)
    grid = Image.new("RGB", (columns * (cw + gap) + gap, len(cells) * (ch + gap) + gap), (255, 255, 255))
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            grid.paste(cell.resize((cw, ch), Image.Resampling.NEAREST), (gap + c * (cw + gap), gap + r * (ch + gap)))
    return grid


@register_pipeline("image-completion")
def build_image_completion(model: Any, processor: ImageGPTProcessor | None = None, **kwargs: Any) -> ImageCompletionPipeline:
    """``pipeline("image-completion", model=FOLDER or model, processor=..., num_samples=4, visible=0.5, ...)``."""
    if processor is None and not isinstance(model, (str, bytes)) and not hasattr(model, "__fspath__"):
        raise ConfigError("image-completion with a loaded model needs processor=ImageGPTProcessor(clusters=...)")
    model, processor = load_vision_model(model, processor, "image-completion")
    return ImageCompletionPipeline(model, processor, **kwargs)
