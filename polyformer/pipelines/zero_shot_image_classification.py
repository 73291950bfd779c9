"""``pipeline("zero-shot-image-classification", model=FOLDER)``: images and label names in,
``[{"score", "label"}]`` out, with a CLIP model.

Each label is written into a sentence (``hypothesis_template``, default ``"This is a photo of {}."``);
the score of a label is the softmax over labels of ``exp(logit_scale)`` times the cosine of the
image's and the sentence's embeddings, as ``transformers``' pipeline computes it. One image gives a
list sorted by score; a list of images gives one such list per image.

    classifier = pipeline("zero-shot-image-classification", model="my-clip-folder")
    classifier("cat.jpg", candidate_labels=["cat", "dog", "car"])
    classifier(images, candidate_labels=labels, hypothesis_template=["a photo of a {}.", "a drawing of a {}."])

What it does beyond ``transformers``:

* **Images in batches, labels once.** ``transformers`` runs the text tower on every label for every
  image; here images go through the image tower ``batch_size`` at a time and each label sentence
  through the text tower once. Label embeddings are kept (per label and templates) and reused by
  later calls, so classifying a stream of images against the same labels costs only the image tower.
* **Prompt ensembling.** ``hypothesis_template`` may be a list: each label's embedding is then the
  mean of its sentences' unit embeddings, scaled back to unit length (the ensembling of CLIP's
  paper, which makes accuracy depend less on one wording).
* **Long texts.** A sentence longer than the text tower's context (77 tokens for CLIP) is cut to it,
  keeping its end-of-text token, with a :class:`LongTextWarning`. With ``stretch_context=True``
  the text tower instead reads it whole, with its learned position table linearly interpolated to
  a longer context (``model.stretch_text_context``, on a copy of the text tower; the image tower is
  shared). Interpolated positions were never trained, and every position's vector moves a little,
  so scores change even for short sentences and accuracy may drop; all sentences of such a call go
  through the same stretched tower, so that their scores stay comparable.
* Wrong input raises a named error: no labels, duplicate labels, a template without ``{}``.

One difference in values, on purpose: an image with transparency is composited onto white, as the
image processor does; ``transformers``' pipeline first opens every image with
``convert("RGB")``, which drops the alpha channel, so whatever colour lies under transparent
pixels (often black) shows, unlike in its own image processor.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from polyformer.errors import ConfigError
from polyformer.pipelines import register_pipeline
from polyformer.pipelines.image_classification import image_batch
from polyformer.pipelines.text_base import check_batch_size

__all__ = ["DEFAULT_TEMPLATE", "LongTextWarning", "ZeroShotImageClassificationPipeline", "check_labels",
           "check_templates"]

DEFAULT_TEMPLATE = "This is a photo of {}."
_CACHE_SIZE = 4096  # label embeddings kept (a few MB at CLIP's widths)


class LongTextWarning(UserWarning):
    """A text was longer than the text tower's context and was cut to it."""


def check_labels(candidate_labels: Any) -> list[str]:
    """A non-empty list of distinct, non-empty strings (``ConfigError`` naming the problem otherwise)."""
    if candidate_labels is None:
        raise ConfigError("zero-shot-image-classification needs candidate_labels=[...]: the names of the classes "
                          "to choose from, e.g. candidate_labels=['cat', 'dog']")
    if isinstance(candidate_labels, str):
        raise ConfigError(f"candidate_labels must be a list of label names, got the string {candidate_labels!r}; "
                          f"write [{candidate_labels!r}] (and at least one more label to choose between)")
    labels = list(candidate_labels)
    if not labels:
        raise ConfigError("candidate_labels is empty; give the names of at least one class, e.g. ['cat', 'dog']")
    bad = [label for label in labels if not isinstance(label, str) or not label.strip()]
    if bad:
        raise ConfigError(f"every candidate label must be a non-empty string; got {bad[0]!r}")
    seen: set[str] = set()
    duplicates = [label for label in labels if label in seen or seen.add(label)]  # type: ignore[func-returns-value]
    if duplicates:
        raise ConfigError(f"candidate_labels has duplicates {sorted(set(duplicates))}: each label would split the "
                          "probability with its copy; give each label once")
    return labels


def check_templates(hypothesis_template: Any) -> list[str]:
    """One template or a non-empty list of them, each with one ``{}`` where the label goes."""
    templates = [hypothesis_template] if isinstance(hypothesis_template, str) else hypothesis_template
    if not isinstance(templates, (list, tuple)) or not templates:
        raise ConfigError(f"hypothesis_template must be a string with '{{}}' or a non-empty list of them, got "
                          f"{hypothesis_template!r}")
    for template in templates:
        if not isinstance(template, str):
            raise ConfigError(f"each hypothesis_template must be a string, got {type(template).__name__}")
        try:
            filled = template.format("\0label\0")
        except (IndexError, KeyError, ValueError):
            filled = ""
        if "{}" not in template or filled.count("\0label\0") != template.count("{}"):
            raise ConfigError(f"hypothesis_template {template!r} must contain '{{}}' where the label goes (and no "
                              "other braces; write {{ or }} for a literal brace), e.g. 'This is a photo of {}.'")
    return list(templates)


class ZeroShotImageClassificationPipeline:
    """A CLIP model and its processor: images against label sentences, label embeddings cached."""

    def __init__(self, model: nn.Module, processor: Any, *, batch_size: int = 32,
                 hypothesis_template: str | Sequence[str] = DEFAULT_TEMPLATE,
                 stretch_context: bool | int = False) -> None:
        for method in ("get_text_features", "get_image_features"):
            if not callable(getattr(model, method, None)):
                raise ConfigError(f"zero-shot-image-classification needs a model with both towers (a CLIPModel); "
                                  f"{type(model).__name__} has no {method}")
        tokenizer = getattr(processor, "tokenizer", None)
        image_processor = getattr(processor, "image_processor", None)
        if tokenizer is None or image_processor is None:
            raise ConfigError("zero-shot-image-classification needs a processor with a tokenizer and an image "
                              f"processor (a CLIPProcessor), got {type(processor).__name__}")
        self.model, self.processor = model.eval(), processor
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.batch_size = check_batch_size(batch_size)
        self.hypothesis_template = check_templates(hypothesis_template)
        self.stretch_context = _check_stretch(stretch_context)
        self._label_cache: OrderedDict[tuple[Any, ...], Tensor] = OrderedDict()
        self._stretched: tuple[int, nn.Module] | None = None

    # -- the call ---------------------------------------------------------------------------------
    def __call__(self, image: Any = None, candidate_labels: Sequence[str] | None = None,
                 hypothesis_template: str | Sequence[str] | None = None, *, images: Any = None,
                 batch_size: int | None = None, stretch_context: bool | int | None = None) -> list:
        """Scores of every label for one image (a list of ``{"score", "label"}``, best first), or one
        such list per image for a list of images."""
        if images is not None:
            if image is not None:
                raise ConfigError("give the images once: as the first argument or as images=, not both")
            image = images
        if image is None:
            raise ConfigError("zero-shot-image-classification needs an image (a path, a PIL image or an array) or "
                              "a list of them")
        labels = check_labels(candidate_labels)
        templates = check_templates(self.hypothesis_template if hypothesis_template is None else hypothesis_template)
        stretch = self.stretch_context if stretch_context is None else _check_stretch(stretch_context)
        batch, single = image_batch(image)
        text = self.label_embeddings(labels, templates, stretch)  # (L, D), unit rows
        scale = self._logit_scale()
        size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        results = []
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size]
            pictures = self.image_embeddings(self.pixel_values(chunk))  # (B, D), unit rows
            probs = (scale * pictures @ text.T).softmax(dim=-1)  # (B, L)
            results.extend(_ranked(row, labels) for row in probs.tolist())
        return results[0] if single else results

    # -- the steps (public: search and the benchmark use them) --------------------------------------
    def pixel_values(self, images: list[Any]) -> Tensor:
        """The image processor's ``pixel_values`` (B, 3, H, W) for a list of images."""
        return self.image_processor(images, return_tensors="pt")["pixel_values"]

    @torch.inference_mode()
    def image_embeddings(self, pixel_values: Tensor) -> Tensor:
        """(B, D) float32 unit-length image embeddings from pixel values."""
        parameter = next(self.model.parameters())
        out = self.model.get_image_features(pixel_values=pixel_values.to(parameter.device, parameter.dtype))
        return _unit(getattr(out, "pooler_output", out))

    def embed_images(self, images: Any) -> np.ndarray:
        """(n, D) unit-length embeddings of images (paths, PIL images or arrays), ``batch_size`` at a time."""
        batch, _ = image_batch(images)
        rows = [self.image_embeddings(self.pixel_values(batch[i:i + self.batch_size])).cpu().numpy()
                for i in range(0, len(batch), self.batch_size)]
        return np.concatenate(rows)

    def embed_texts(self, texts: Sequence[str], stretch_context: bool | int | None = None) -> np.ndarray:
        """(n, D) unit-length embeddings of texts as written (no template); long texts as the pipeline treats them."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ConfigError("texts must be a non-empty list of non-empty strings")
        stretch = self.stretch_context if stretch_context is None else _check_stretch(stretch_context)
        return self._text_embeddings(list(texts), stretch).cpu().numpy()

    def label_embeddings(self, labels: Sequence[str], templates: Sequence[str], stretch: bool | int = False) -> Tensor:
        """(L, D) unit-length label embeddings: each label's sentences embedded, averaged, renormalised.

        Embeddings are cached per (label, templates, context), so only labels not seen before with
        these templates reach the text tower.
        """
        context = self._context_key([t.format(label) for label in labels for t in templates], stretch)
        keys = [(label, tuple(templates), context) for label in labels]
        missing = [label for label, key in zip(labels, keys) if key not in self._label_cache]
        if missing:
            sentences = [t.format(label) for label in missing for t in templates]
            vectors = self._text_embeddings(sentences, stretch, context)  # (M*T, D)
            means = _unit(vectors.view(len(missing), len(templates), -1).mean(dim=1))
            for label, vector in zip(missing, means):
                self._label_cache[(label, tuple(templates), context)] = vector
        rows = []
        for key in keys:
            self._label_cache.move_to_end(key)
            rows.append(self._label_cache[key])
        while len(self._label_cache) > _CACHE_SIZE:
            self._label_cache.popitem(last=False)
        return torch.stack(rows)

    # -- texts ---------------------------------------------------------------------------------------
    def _context(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def _lengths(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, truncation=False)["input_ids"]]

    def _context_key(self, texts: list[str], stretch: bool | int) -> int | str:
        """How these texts are run: "trained" (cut to the context if needed), or the stretched length."""
        if stretch is False:
            return "trained"
        longest, context = max(self._lengths(texts)), self._context()
        if stretch is True:
            # whole multiples of the trained context: a label's embedding does not depend on the
            # exact length of the longest sentence it was asked with
            return "trained" if longest <= context else context * math.ceil(longest / context)
        if longest > stretch:
            raise ConfigError(f"stretch_context={stretch} is shorter than a sentence of {longest} tokens; give a "
                              "larger length, or stretch_context=True to choose one")
        return stretch if stretch > context else "trained"

    @torch.inference_mode()
    def _text_embeddings(self, texts: list[str], stretch: bool | int, context: int | str | None = None) -> Tensor:
        context = self._context_key(texts, stretch) if context is None else context
        model = self.model if context == "trained" else self._stretched_model(int(context))
        limit = self._context()
        if context == "trained":
            too_long = [(t, n) for t, n in zip(texts, self._lengths(texts)) if n > limit]
            if too_long:
                text, n = too_long[0]
                warnings.warn(f"{len(too_long)} text(s) are longer than the text tower's {limit} tokens (e.g. "
                              f"{text[:60]!r}: {n} tokens) and were cut to {limit}; pass stretch_context=True to "
                              "read them whole with a stretched position table (accuracy may drop)",
                              LongTextWarning, stacklevel=3)
        rows = []
        device = next(model.parameters()).device
        for start in range(0, len(texts), 256):
            encoded = self.tokenizer(texts[start:start + 256], padding=True, return_tensors="pt",
                                     truncation=context == "trained", max_length=limit if context == "trained" else None)
            out = model.get_text_features(input_ids=encoded["input_ids"].to(device),
                                          attention_mask=encoded["attention_mask"].to(device))
            rows.append(_unit(getattr(out, "pooler_output", out)))
        return torch.cat(rows)

    def _stretched_model(self, length: int) -> nn.Module:
        """A copy of the model whose text tower reads ``length`` tokens; the image tower is shared, not copied."""
        if self._stretched is not None and self._stretched[0] == length:
            return self._stretched[1]
        if not callable(getattr(self.model, "stretch_text_context", None)):
            raise ConfigError(f"{type(self.model).__name__} cannot stretch its text context (no stretch_text_context)")
        shared = {id(m): m for m in (getattr(self.model, "vision_model", None),
                                     getattr(self.model, "visual_projection", None)) if m is not None}
        stretched = copy.deepcopy(self.model, memo=shared)
        stretched.stretch_text_context(length)
        self._stretched = (length, stretched.eval())
        return stretched

    def _logit_scale(self) -> Tensor:
        # the temperature as the model's forward applies it (CLIP clamps it at 100)
        scale = self.model.logit_scale.detach().float().exp()
        return scale.clamp(max=100.0)


def _unit(vectors: Tensor) -> Tensor:
    return torch.nn.functional.normalize(vectors.float(), dim=-1)


def _ranked(scores: list[float], labels: list[str]) -> list[dict[str, Any]]:
    # sorted() is stable: equal scores keep the labels' order, as transformers' pipeline does
    return [{"score": s, "label": label} for s, label in sorted(zip(scores, labels), key=lambda pair: -pair[0])]


def _check_stretch(value: Any) -> bool | int:
    if isinstance(value, bool) or (isinstance(value, int) and value > 0):
        return value
    raise ConfigError(f"stretch_context must be True, False or a context length in tokens, got {value!r}")


def load_clip(model: Any, processor: Any, task: str) -> tuple[nn.Module, Any]:
    """(model, processor) from a folder (both read from it), or a loaded model and ``processor=``."""
    from polyformer.processors.auto import AutoProcessor

    if isinstance(model, (str, Path)):
        from polyformer.models import from_pretrained

        folder = Path(model)
        return from_pretrained(folder), AutoProcessor.from_pretrained(folder) if processor is None else processor
    if not isinstance(model, nn.Module):
        raise ConfigError(f"pipeline({task!r}): model must be a model folder or a loaded model, got {type(model).__name__}")
    if processor is None:
        raise ConfigError(f"pipeline({task!r}) with a loaded model needs processor=<its CLIPProcessor>, e.g. "
                          "polyformer.AutoProcessor.from_pretrained(folder)")
    return model, processor


@register_pipeline("zero-shot-image-classification")
def build_zero_shot_image_classification(model: Any, processor: Any = None,
                                         **kwargs: Any) -> ZeroShotImageClassificationPipeline:
    """``pipeline("zero-shot-image-classification", model=FOLDER or model, processor=None, batch_size=32,
    hypothesis_template="This is a photo of {}.", stretch_context=False)``."""
    model, processor = load_clip(model, processor, "zero-shot-image-classification")
    return ZeroShotImageClassificationPipeline(model, processor, **kwargs)
