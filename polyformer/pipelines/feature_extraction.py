"""``pipeline("feature-extraction", model=FOLDER)``: the model's last hidden states as nested lists.

One text gives ``[[[...hidden...] for each token]]`` (batch of one, as Hugging Face returns it);
a list of texts gives one such value per text. ``return_tensors=True`` gives (1, tokens, hidden)
tensors instead; ``truncation`` and ``tokenize_kwargs`` go to the tokenizer. Texts go through the
model ``batch_size`` (8) at a time, each batch padded to its longest text; every text's values
are those of a forward pass on it alone (padding is masked out and cut away).

:meth:`FeatureExtractionPipeline.embed` gives one vector per text instead, pooled as
sentence-transformers pools (all-MiniLM-L6-v2 and friends): the mean of the token vectors weighted
by the attention mask (``pooling="mean"``) or the ``[CLS]`` vector (``"cls"``), optionally scaled to
unit length.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from polyformer.errors import ConfigError, DataError, ShapeError
from polyformer.pipelines import register_pipeline
from polyformer.pipelines.text_base import check_batch_size, forward_batches, load_text_model

__all__ = ["FeatureExtractionPipeline", "POOLINGS", "pool"]

POOLINGS = ("mean", "cls")


def pool(hidden: Tensor, attention_mask: Tensor, pooling: str = "mean", normalize: bool = False) -> Tensor:
    """One vector per row of ``hidden`` (B, T, H): the mask-weighted mean over tokens, or the first token.

    Padding (mask 0) takes no part in the mean; ``normalize`` scales each vector to unit L2 norm.
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if hidden.dim() != 3 or tuple(attention_mask.shape) != tuple(hidden.shape[:2]):
        raise ShapeError(f"pool expects hidden (B, T, H) and attention_mask (B, T), got {tuple(hidden.shape)} and "
                         f"{tuple(attention_mask.shape)}")
    if pooling == "cls":
        vectors = hidden[:, 0]
    else:
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        # the clamp only matters for an all-padding row, which a tokenizer never makes
        vectors = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors


class FeatureExtractionPipeline:
    """An encoder and its tokenizer; ``__call__`` returns hidden states per token."""

    def __init__(self, model: Any, tokenizer: Any, *, truncation: bool | str | None = None,
                 tokenize_kwargs: dict[str, Any] | None = None, return_tensors: bool = False,
                 batch_size: int = 8) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = check_batch_size(batch_size)
        self.tokenize_kwargs = dict(tokenize_kwargs or {})
        if truncation is not None:
            if "truncation" in self.tokenize_kwargs:
                raise ConfigError("truncation is given twice (as an argument and in tokenize_kwargs)")
            self.tokenize_kwargs["truncation"] = truncation
        self.return_tensors = return_tensors

    def __call__(self, inputs: str | list[str], return_tensors: bool | None = None, batch_size: int | None = None) -> Any:
        """Hidden states of one text, or of each text of a list."""
        as_tensor = self.return_tensors if return_tensors is None else return_tensors
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise DataError("feature-extraction takes a string or a non-empty list of strings")
        results: list[Any] = [None] * len(texts)
        for rows, hidden, mask in self.hidden_states(texts, batch_size):
            for row, values, keep in zip(rows, hidden, mask):
                values = values[keep.bool()].unsqueeze(0)  # (1, tokens, H): this text's tokens only
                results[row] = values.clone() if as_tensor else values.tolist()
        return results[0] if single else results

    def embed(self, inputs: str | list[str], pooling: str = "mean", normalize: bool = False,
              batch_size: int | None = None) -> np.ndarray:
        """Sentence embeddings (N, H) float32 of a text or a list of texts (see :func:`pool`)."""
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise DataError("embed takes a string or a non-empty list of strings")
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        out: np.ndarray | None = None
        for rows, hidden, mask in self.hidden_states(texts, batch_size):
            vectors = pool(hidden, mask, pooling, normalize).numpy()
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        assert out is not None  # texts is not empty
        return out

    def hidden_states(self, texts: list[str], batch_size: int | None = None) -> Iterator[tuple[list[int], Tensor, Tensor]]:
        """``(rows, hidden (B, T, H), attention_mask (B, T))`` per forward pass over ``texts``.

        ``rows`` are the indices in ``texts`` of the batch's rows (texts are batched by length).
        """
        size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        inputs = self.tokenizer(texts, **{"padding": True, **self.tokenize_kwargs, "return_tensors": "pt"})
        for rows, chunk, out in forward_batches(self.model, inputs, size):
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # (B, T, H)
            yield rows, hidden.float().cpu(), chunk["attention_mask"]


@register_pipeline("feature-extraction")
def build_feature_extraction(model: Any, tokenizer: Any = None, **kwargs: Any) -> FeatureExtractionPipeline:
    """``pipeline("feature-extraction", model=FOLDER or model, tokenizer=None, truncation=None, batch_size=8)``."""
    model, tokenizer = load_text_model(model, tokenizer, "feature-extraction")
    return FeatureExtractionPipeline(model, tokenizer, **kwargs)
