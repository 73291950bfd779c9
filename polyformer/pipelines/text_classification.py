"""``pipeline("text-classification", model=FOLDER)``: texts (or text pairs) in, ``[{"label", "score"}]`` out.

As Hugging Face's pipeline: without ``top_k`` each text gives its best class, ``[{"label",
"score"}]`` for one text (a bare dict for one text pair) and one dict per text for a list; with ``top_k=k`` each text gives its
``k`` best classes, sorted (``top_k=None``: all). Texts go through the model ``batch_size`` (8) at
a time, each batch padded to its longest text (the scores are those of one text at a time). Scores are a softmax over the classes, a sigmoid
for one output or a multi-label head, raw logits for regression, unless ``function_to_apply``
("softmax", "sigmoid", "none") says otherwise. A pair is ``{"text": ..., "text_pair": ...}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polyformer.errors import ConfigError, DataError
from polyformer.pipelines import register_pipeline
from polyformer.pipelines.text_base import (check_batch_size, check_head, check_top_k, forward_batches, load_text_model,
                                            model_labels, softmax)

__all__ = ["TextClassificationPipeline"]

FUNCTIONS = ("softmax", "sigmoid", "none")
_UNSET = object()


class TextClassificationPipeline:
    """A sequence classifier and its tokenizer behind Hugging Face's text-classification call."""

    def __init__(self, model: Any, tokenizer: Any, *, function_to_apply: str | None = None, batch_size: int = 8,
                 **tokenizer_kwargs: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = check_batch_size(batch_size)
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

    def _encode(self, texts: list[Any]) -> Any:
        """Tokenize strings, or ``{"text", "text_pair"}`` dicts, as one padded batch."""
        options = {"padding": True, **self.tokenizer_kwargs, "return_tensors": "pt"}
        if isinstance(texts[0], str):
            return self.tokenizer(texts, **options)
        return self.tokenizer([t["text"] for t in texts], [t["text_pair"] for t in texts], **options)

    def scores(self, texts: list[Any], function: str, batch_size: int | None = None) -> list[np.ndarray]:
        """The class scores of each text (a string or ``{"text", "text_pair"}``), ``batch_size`` at a time."""
        groups: dict[str, list[int]] = {"single": [], "pair": []}
        for index, text in enumerate(texts):
            if isinstance(text, dict):
                if set(text) - {"text", "text_pair"} or "text" not in text:
                    raise DataError(f"a text pair is {{'text': ..., 'text_pair': ...}}, got keys {sorted(text)}")
                groups["pair" if text.get("text_pair") is not None else "single"].append(index)
            elif isinstance(text, str):
                groups["single"].append(index)
            else:
                raise DataError(f"text-classification takes strings or {{'text', 'text_pair'}} dicts, got {type(text).__name__}")
        out: list[np.ndarray] = [np.empty(0)] * len(texts)
        for kind, members in groups.items():  # one tokenizer call for the single texts, one for the pairs
            if not members:
                continue
            items = [texts[i] if kind == "pair" else _text(texts[i]) for i in members]
            for rows, _, output in forward_batches(self.model, self._encode(items), batch_size or self.batch_size):
                logits = output.logits.float().cpu().numpy()
                for row, values in zip(rows, logits):
                    out[members[row]] = _apply(function, values)
        return out

    def __call__(self, inputs: Any, top_k: Any = _UNSET, function_to_apply: str | None = None,
                 batch_size: int | None = None) -> list[Any]:
        """Classify one text or a list of texts; see the module docstring for the output forms."""
        size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        function = self._function(function_to_apply or self.function_to_apply)
        single = isinstance(inputs, (str, dict))
        texts = [inputs] if single else list(inputs)
        if not texts:
            raise DataError("text-classification needs a text or a non-empty list of texts")
        results = []
        for scores in self.scores(texts, function, size):
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


def _text(item: str | dict[str, str]) -> str:
    return item["text"] if isinstance(item, dict) else item


def _apply(function: str, logits: np.ndarray) -> np.ndarray:
    """Scores from one row of logits: softmax, sigmoid or the logits themselves."""
    if function == "softmax":
        return softmax(logits)
    return 1.0 / (1.0 + np.exp(-logits)) if function == "sigmoid" else logits


@register_pipeline("text-classification")
def build_text_classification(model: Any, tokenizer: Any = None, **kwargs: Any) -> TextClassificationPipeline:
    """``pipeline("text-classification", model=FOLDER or model, tokenizer=None, function_to_apply=None, batch_size=8)``."""
    model, tokenizer = load_text_model(model, tokenizer, "text-classification")
    check_head(model, "text-classification", "ForSequenceClassification")
    return TextClassificationPipeline(model, tokenizer, **kwargs)


register_pipeline("sentiment-analysis")(build_text_classification)  # Hugging Face's other name for the task
