"""What the text pipelines share: a model and the tokenizer saved beside it, one forward pass,
and score functions. Each task module holds only its own pre- and post-processing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from polyformer.errors import ConfigError

__all__ = ["check_batch_size", "check_head", "check_top_k", "forward", "forward_batches", "load_text_model",
           "model_labels", "softmax"]

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def load_text_model(model: Any, tokenizer: Any, task: str) -> tuple[nn.Module, Any]:
    """(model, tokenizer): from a folder (both read from it), or a loaded model and ``tokenizer=``.

    ``tokenizer`` may be a tokenizer or a folder. A folder without tokenizer files is refused with a
    :class:`~polyformer.errors.DataError` naming the missing files: there is no default tokenizer.
    """
    from polyformer.processors.auto import AutoTokenizer

    if isinstance(model, (str, Path)):
        from polyformer.models import from_pretrained

        folder = Path(model)
        loaded = from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder) if tokenizer is None else tokenizer
        model = loaded
    elif not isinstance(model, nn.Module):
        raise ConfigError(f"pipeline({task!r}): model must be a model folder or a loaded model, got {type(model).__name__}")
    if tokenizer is None:
        raise ConfigError(f"pipeline({task!r}) with a loaded model needs tokenizer=<a tokenizer or its folder>, e.g. "
                          "polyformer.AutoTokenizer.from_pretrained(folder)")
    if isinstance(tokenizer, (str, Path)):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and tokenizer.vocab_size > vocab:
        raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} ids but the model's vocab_size is {vocab}; "
                          "they do not belong together (save the model's own tokenizer beside it)")
    return model.eval(), tokenizer


def check_head(model: nn.Module, task: str, suffix: str) -> None:
    """Refuse a model without the task's head (a bare encoder has no logits to read a class from)."""
    name = type(model).__name__
    if not name.endswith(suffix):
        raise ConfigError(f"{task} needs a model with a {suffix[3:]} head (a *{suffix} class); this folder holds "
                          f"a {name}. Fine-tune one (polyformer train text-topics), or use feature-extraction / "
                          "polyformer embed for a bare encoder")


def model_labels(model: nn.Module, task: str) -> dict[int, str]:
    """The model's ``id2label`` (a classifier without one cannot name its answers)."""
    config = getattr(model, "config", None)
    labels = dict(getattr(config, "id2label", None) or {})
    if not labels:
        raise ConfigError(f"{type(model).__name__} has no id2label: {task} needs a classification head")
    return {int(k): v for k, v in labels.items()}


@torch.inference_mode()
def forward(model: nn.Module, inputs: dict[str, Any]) -> Any:
    """One forward pass on the model's device with the tokenizer's tensors (``input_ids``, ``attention_mask``, ``token_type_ids``)."""
    device = next(model.parameters()).device
    return model(**{k: inputs[k].to(device) for k in MODEL_INPUTS if k in inputs})


def check_batch_size(batch_size: Any) -> int:
    """A positive integer: how many rows (texts, or QA windows) one forward pass takes."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def forward_batches(model: nn.Module, inputs: dict[str, Any], batch_size: int) -> Iterator[tuple[list[int], dict[str, Tensor], Any]]:
    """Run the padded rows of ``inputs`` through ``model`` ``batch_size`` rows at a time.

    Yields ``(rows, chunk, output)``: the row indices of this forward pass, its input tensors and
    the model's output (row ``j`` of the output is row ``rows[j]`` of ``inputs``). Rows are taken
    in order of length and each chunk is cut to its longest row, so a short text is never run at
    the width of the longest one; with right padding that cut changes no real token's output
    (padding is masked out and positions count from the left), so each row's values are those of
    a forward pass on that text alone, up to float rounding.
    """
    check_batch_size(batch_size)
    mask = inputs["attention_mask"]
    lengths = mask.sum(dim=1)
    # a stable sort keeps equal-length rows in input order (deterministic chunks)
    order = torch.argsort(lengths, stable=True).tolist()
    # right padding (each row's tokens first): trailing columns can be cut; any other layout keeps its width
    right_padded = bool((mask == (torch.arange(mask.shape[1]) < lengths[:, None])).all())
    for first in range(0, len(order), batch_size):
        rows = order[first : first + batch_size]
        index = torch.tensor(rows)
        width = int(lengths[index].max()) if right_padded else mask.shape[1]
        chunk = {k: inputs[k][index, :width] for k in MODEL_INPUTS if k in inputs}
        yield rows, chunk, forward(model, chunk)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the maximum for stability (float64 in, as given)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def check_top_k(top_k: Any, allow_none: bool = False) -> int | None:
    """A positive integer (or None where "all" is allowed)."""
    if top_k is None and allow_none:
        return None
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ConfigError(f"top_k must be a positive integer{' or None' if allow_none else ''}, got {top_k!r}")
    return top_k
