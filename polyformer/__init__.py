"""polyformer: transformers along three axes — scaling laws, efficient attention, beyond text."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def from_pretrained(path: Any, **kwargs: Any) -> Any:
    """Load any supported Hugging Face model folder (the family is read from ``config.json``)."""
    from polyformer.models import from_pretrained as load

    return load(path, **kwargs)


def pipeline(task: str, model: Any = None, **kwargs: Any) -> Any:
    """A task pipeline (``"text-generation"``, ``"image-classification"``, ...) around a model."""
    from polyformer.pipelines import pipeline as build

    return build(task, model=model, **kwargs)


# Public classes by the module that defines them: imported on first use, so that
# ``import polyformer`` stays cheap and ``from polyformer import CLIPModel`` works as in transformers.
_LAZY_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("AutoTokenizer", "AutoProcessor", "AutoImageProcessor"), "polyformer.processors.auto"),
    **dict.fromkeys(("CLIPProcessor", "CLIPImageProcessor"), "polyformer.processors.clip"),
    "CLIPTokenizer": "polyformer.processors.clip_tokenizer",
    **dict.fromkeys(
        ("CLIPConfig", "CLIPModel", "CLIPTextModel", "CLIPTextModelWithProjection", "CLIPVisionModel",
         "CLIPVisionModelWithProjection"),
        "polyformer.models.clip",
    ),
    **dict.fromkeys(
        ("BertModel", "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
         "BertForMaskedLM"),
        "polyformer.models.bert",
    ),
    **dict.fromkeys(("ViTModel", "ViTForImageClassification"), "polyformer.models.vit"),
    **dict.fromkeys(("ImageGPTForCausalImageModeling", "ImageGPTForImageClassification"), "polyformer.models.igpt"),
    "GPTLMHeadModel": "polyformer.models.gpt",
}


def __getattr__(name: str) -> Any:
    """The classes of :data:`_LAZY_EXPORTS` (processors, models), imported on first use."""
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'polyformer' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_EXPORTS])
