"""CLIP's processors: the exact BPE tokenizer, the image processor and the two together.

* :class:`CLIPTokenizer` (:mod:`polyformer.processors.clip_tokenizer`): OpenAI's byte-level BPE.
* :class:`CLIPImageProcessor`: shortest side -> 224 (bicubic), centre crop 224x224, rescale by
  1/255, normalise with the mean / std of CLIP's training images, always RGB. These are the
  settings CLIP was trained with; a model given images prepared otherwise (bilinear resizing,
  squashing instead of cropping, ImageNet's mean / std) loses accuracy without any error.
* :class:`CLIPProcessor`: ``processor(text=..., images=..., return_tensors="pt", padding=True)``
  -> ``input_ids``, ``attention_mask``, ``pixel_values``.

All three read and write ``transformers``' files and give its ids and pixel values.

    processor = CLIPProcessor.from_openai_bpe(image_size=224)
    inputs = processor(text=["a photo of a cat", "a photo of a dog"], images=image, padding=True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from polyformer.errors import ConfigError, DataError
from polyformer.processors.base import register_processor
from polyformer.processors.clip_tokenizer import CLIP_MAX_LENGTH, CLIPTokenizer
from polyformer.processors.combined import CombinedProcessor
from polyformer.processors.image import ImageProcessor

__all__ = ["CLIP_MAX_LENGTH", "CLIPImageProcessor", "CLIPProcessor", "CLIPTokenizer", "OPENAI_CLIP_MEAN",
           "OPENAI_CLIP_STD"]

#: per-channel mean and std of the images CLIP was trained on (RGB)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class CLIPImageProcessor(ImageProcessor):
    """``CLIPImageProcessor``: :class:`ImageProcessor` with CLIP's defaults.

    ``size`` given as a plain integer means the shortest edge (as CLIP's older configs write
    ``"size": 224``), not a square. Images are always made RGB (transparency composited onto
    white, 16-bit scaled to 8-bit, see :mod:`polyformer.processors.image`); ``do_convert_rgb``
    is kept for the file only, since CLIP's towers take three channels.
    """

    size: Any = field(default_factory=lambda: {"shortest_edge": 224})
    resample: int = 3
    do_center_crop: bool = True
    crop_size: Any = field(default_factory=lambda: {"height": 224, "width": 224})
    image_mean: Sequence[float] = OPENAI_CLIP_MEAN
    image_std: Sequence[float] = OPENAI_CLIP_STD
    do_convert_rgb: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.size, int) and not isinstance(self.size, bool):
            self.size = {"shortest_edge": self.size}  # transformers' CLIP reads an int size this way too
        super().__post_init__()
        if self.num_channels != 3:
            raise ConfigError(f"CLIP's vision tower takes RGB images; num_channels must be 3, got {self.num_channels}")
        self.processor_type = "CLIPImageProcessor"


class CLIPProcessor(CombinedProcessor):
    """``CLIPProcessor``: a :class:`CLIPTokenizer` and a :class:`CLIPImageProcessor`.

    ``processor(text=..., images=..., return_tensors="pt", padding=True, truncation=...)`` gives
    ``input_ids`` and ``attention_mask`` for the texts and ``pixel_values`` for the images;
    tokenizer options (``padding``, ``truncation``, ``max_length``) pass through.
    """

    hf_class = "CLIPProcessor"

    @classmethod
    def from_openai_bpe(cls, image_size: int = 224, path: str | Path | None = None) -> "CLIPProcessor":
        """The full OpenAI tokenizer (see :meth:`CLIPTokenizer.from_openai_bpe`) and an image processor
        that resizes the shortest side to ``image_size`` and crops ``image_size`` x ``image_size``."""
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
            raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
        images = CLIPImageProcessor(size={"shortest_edge": image_size},
                                    crop_size={"height": image_size, "width": image_size})
        return cls(tokenizer=CLIPTokenizer.from_openai_bpe(path), image_processor=images)

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs: Any) -> "CLIPProcessor":
        """Both parts from ``folder``: the tokenizer the folder names, and a :class:`CLIPImageProcessor`
        built from the folder's image settings (what they leave out takes CLIP's defaults, not ViT's)."""
        from polyformer.processors.auto import AutoTokenizer

        return cls(tokenizer=AutoTokenizer.from_pretrained(folder), image_processor=CLIPImageProcessor.from_pretrained(folder),
                   **kwargs)

    def __call__(self, text: Any = None, images: Any = None, *, return_tensors: str | None = "pt",
                 **kwargs: Any) -> dict[str, Any]:
        """Texts and / or images -> model inputs; an empty text list, None items or non-strings raise :class:`DataError`."""
        if text is not None:
            _check_texts(text)
        return super().__call__(text, images, return_tensors=return_tensors, **kwargs)


def _check_texts(text: Any) -> None:
    """CLIP takes a text or a non-empty list of texts (one caption each, no pairs)."""
    if isinstance(text, str):
        return
    if not isinstance(text, (list, tuple)):
        raise DataError(f"text must be a string or a list of strings, got {type(text).__name__}")
    if not text:
        raise DataError("text is an empty list; give at least one text, or leave text out to process images only")
    bad = [(i, type(t).__name__) for i, t in enumerate(text) if not isinstance(t, str)]
    if bad:
        raise DataError(f"every text must be a string; item {bad[0][0]} is a {bad[0][1]}"
                        + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))


register_processor("image_processor", CLIPImageProcessor,
                   names=["CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPImageProcessorPil"], model_types=["clip"])
register_processor("processor", CLIPProcessor, names=["CLIPProcessor"], model_types=["clip"])
