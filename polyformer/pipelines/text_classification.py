"""``pipeline("text-classification", model=FOLDER)``: texts (or text pairs) in, ``[{"label", "score"}]`` out.

As Hugging Face's pipeline: without ``top_k`` each text gives its best class, ``[{"label",
"score"}]`` for one text (a bare dict for one text pair) and one dict per text for a list; with ``top_k=k`` each text gives its
``k`` best classes, sorted (``top_k=None``: all). Scores are a softmax over the classes, a sigmoid
for one output or a multi-label head, raw logits for regression, unless ``function_to_apply``
("softmax", "sigmoid", "none") says otherwise. A pair is ``{"text": ..., "text_pair": ...}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polyformer.errors import ConfigError, DataError
from polyformer.pipelines import register_pipeline
from polyformer.pipelines.text_base import check_top_k, forward, load_text_model, model_labels, softmax

__all__ = ["TextClassificationPipeline"]

FUNCTIONS = ("softmax", "sigmoid", "none")
_UNSET = object()


class TextClassificationPipeline:
    """A sequence classifier and its tokenizer behind Hugging Face's text-classification call."""

    def __init__(self, model: Any, tokenizer: Any, *, function_to_apply: str | None = None, **tokenizer_kwargs: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.id2label = model_labels(model, "text-classification")
        self.function_to_apply = function_to_apply
        self.tokenizer_kwargs = tokenizer_kwargs

    def _function(self, name: str | None) -> str:
        if name is None:
            problem = getattr(self.model.config, "problem_type", None)
            if problem == "regression":
                return "none"
            return "sigmoid" if problem == "multi_label_classification" or len(self.id2label) == 1 else "softmax"
        if not isinstance(name, str) or name.lower() not in FUNCTIONS:
            raise ConfigError(f"function_to_apply must be one of {', '.join(FUNCTIONS)}, got {name!r}")
        return name.lower()

    def scores(self, text: str | dict[str, str], function: str) -> np.ndarray:
        """The class scores of one text (or ``{"text", "text_pair"}``)."""
        if isinstance(text, dict):
            if set(text) - {"text", "text_pair"} or "text" not in text:
                raise DataError(f"a text pair is {{'text': ..., 'text_pair': ...}}, got keys {sorted(text)}")
            inputs = self.tokenizer(text["text"], text.get("text_pair"), return_tensors="pt", **self.tokenizer_kwargs)
        elif isinstance(text, str):
            inputs = self.tokenizer(text, return_tensors="pt", **self.tokenizer_kwargs)
        else:
            raise DataError(f"text-classification takes strings or {{'text', 'text_pair'}} dicts, got {type(text).__name__}")
        logits = forward(self.model, inputs).logits[0].float().cpu().numpy()
        if function == "softmax":
            return softmax(logits)
        return 1.0 / (1.0 + np.exp(-logits)) if function == "sigmoid" else logits

    def __call__(self, inputs: Any, top_k: Any = _UNSET, function_to_apply: str | None = None) -> list[Any]:
        """Classify one text or a list of texts; see the module docstring for the output forms."""
        function = self._function(function_to_apply or self.function_to_apply)
        single = isinstance(inputs, (str, dict))
        texts = [inputs] if single else list(inputs)
        if not texts:
            raise DataError("text-classification needs a text or a non-empty list of texts")
        results = []
        for text in texts:
            scores = self.scores(text, function)
            if top_k is _UNSET:  # Hugging Face's default form: the best class only, as a dict
                best = int(np.argmax(scores))
                results.append({"label": self.id2label[best], "score": float(scores[best])})
                continue
            k = check_top_k(top_k, allow_none=True)
            ranked = sorted(({"label": self.id2label[i], "score": float(s)} for i, s in enumerate(scores)),
                            key=lambda r: r["score"], reverse=True)
            results.append(ranked[:k] if k is not None else ranked)
        if top_k is _UNSET and not isinstance(inputs, dict):
            return results  # Hugging Face's form: a list even for one text
        return results[0] if single else results


@register_pipeline("text-classification")
def build_text_classification(model: Any, tokenizer: Any = None, **kwargs: Any) -> TextClassificationPipeline:
    """``pipeline("text-classification", model=FOLDER or model, tokenizer=None, function_to_apply=None)``."""
    model, tokenizer = load_text_model(model, tokenizer, "text-classification")
    return TextClassificationPipeline(model, tokenizer, **kwargs)


register_pipeline("sentiment-analysis")(build_text_classification)  # Hugging Face's other name for the task
