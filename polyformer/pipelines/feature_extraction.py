"""``pipeline("feature-extraction", model=FOLDER)``: the model's last hidden states as nested lists.

One text gives ``[[[...hidden...] for each token]]`` (batch of one, as Hugging Face returns it);
a list of texts gives one such value per text. ``return_tensors=True`` gives (1, tokens, hidden)
tensors instead; ``truncation`` and ``tokenize_kwargs`` go to the tokenizer.
"""

from __future__ import annotations

from typing import Any

from polyformer.errors import ConfigError, DataError
from polyformer.pipelines import register_pipeline
from polyformer.pipelines.text_base import forward, load_text_model

__all__ = ["FeatureExtractionPipeline"]


class FeatureExtractionPipeline:
    """An encoder and its tokenizer; ``__call__`` returns hidden states per token."""

    def __init__(self, model: Any, tokenizer: Any, *, truncation: bool | str | None = None,
                 tokenize_kwargs: dict[str, Any] | None = None, return_tensors: bool = False) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.tokenize_kwargs = dict(tokenize_kwargs or {})
        if truncation is not None:
            if "truncation" in self.tokenize_kwargs:
                raise ConfigError("truncation is given twice (as an argument and in tokenize_kwargs)")
            self.tokenize_kwargs["truncation"] = truncation
        self.return_tensors = return_tensors

    def __call__(self, inputs: str | list[str], return_tensors: bool | None = None) -> Any:
        """Hidden states of one text, or of each text of a list."""
        as_tensor = self.return_tensors if return_tensors is None else return_tensors
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise DataError("feature-extraction takes a string or a non-empty list of strings")
        results = []
        for text in texts:
            out = forward(self.model, self.tokenizer(text, return_tensors="pt", **self.tokenize_kwargs))
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # (1, T, H)
            results.append(hidden.cpu() if as_tensor else hidden.tolist())
        return results[0] if single else results


@register_pipeline("feature-extraction")
def build_feature_extraction(model: Any, tokenizer: Any = None, **kwargs: Any) -> FeatureExtractionPipeline:
    """``pipeline("feature-extraction", model=FOLDER or model, tokenizer=None, truncation=None)``."""
    model, tokenizer = load_text_model(model, tokenizer, "feature-extraction")
    return FeatureExtractionPipeline(model, tokenizer, **kwargs)
