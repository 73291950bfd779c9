"""``pipeline("fill-mask", model=FOLDER)``: a text with the mask token in, the likeliest fillers out.

Each text gives the ``top_k`` (default 5) fillers of its mask as Hugging Face writes them,
``{"score", "token", "token_str", "sequence"}`` (``sequence``: the text with the mask filled, special
tokens dropped). A text with several masks gives one such list per mask (the other masks stay
in ``sequence``). ``targets`` restricts the fillers to the given words (a word outside the
vocabulary stands for its first token). Texts go through the model ``batch_size`` (8) at a time,
each batch padded to its longest text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from polyformer.errors import ConfigError, DataError
from polyformer.pipelines import register_pipeline
from polyformer.pipelines.text_base import (check_batch_size, check_head, check_top_k, forward_batches, load_text_model)

__all__ = ["FillMaskPipeline"]


class FillMaskPipeline:
    """A masked language model and its tokenizer behind Hugging Face's fill-mask call."""

    def __init__(self, model: Any, tokenizer: Any, *, top_k: int = 5, targets: str | list[str] | None = None,
                 batch_size: int = 8) -> None:
        if tokenizer.mask_token_id is None:
            raise ConfigError("fill-mask needs a tokenizer with a mask_token")
        self.model, self.tokenizer = model, tokenizer
        self.top_k, self.targets = check_top_k(top_k), targets
        self.batch_size = check_batch_size(batch_size)

    def target_ids(self, targets: str | list[str]) -> np.ndarray:
        """Vocabulary ids of ``targets`` (a word outside the vocabulary: its first token's id)."""
        targets = [targets] if isinstance(targets, str) else list(targets)
        vocab = self.tokenizer.get_vocab()
        ids = []
        for target in targets:
            if target in vocab:
                ids.append(vocab[target])
                continue
            pieces = self.tokenizer(target, add_special_tokens=False, return_token_type_ids=False,
                                    return_attention_mask=False)["input_ids"]
            if pieces:
                ids.append(pieces[0])
        if not ids:
            raise ConfigError(f"none of the targets {targets} gives a token; pass words the tokenizer knows")
        return np.array(sorted(set(ids)))

    def __call__(self, inputs: str | list[str], top_k: int | None = None,
                 targets: str | list[str] | None = None, batch_size: int | None = None) -> list[Any]:
        """Fillers of each text's mask(s); see the module docstring for the output forms."""
        k = check_top_k(top_k if top_k is not None else self.top_k)
        targets = targets if targets is not None else self.targets
        wanted = None if targets is None else self.target_ids(targets)
        if wanted is not None:
            k = min(k, len(wanted))
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise DataError("fill-mask takes a string or a non-empty list of strings")
        size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        inputs = self.tokenizer(texts, padding=True, return_tensors="pt")
        masked = inputs["input_ids"] == self.tokenizer.mask_token_id
        for text, row in zip(texts, masked):
            if not bool(row.any()):
                raise DataError(f"no {self.tokenizer.mask_token} in {text!r}; fill-mask needs at least one")
        results: list[Any] = [None] * len(texts)
        for rows, chunk, output in forward_batches(self.model, inputs, size):
            for j, row in enumerate(rows):
                ids = chunk["input_ids"][j][chunk["attention_mask"][j].bool()]  # this text's tokens, no padding
                positions = torch.nonzero(ids == self.tokenizer.mask_token_id).flatten().tolist()
                logits = output.logits[j, positions].float().cpu()  # (masks, V): only the masked positions
                results[row] = self._fillers(ids, positions, logits, k, wanted)
        return results[0] if len(results) == 1 else results  # as Hugging Face: a one-text list is unwrapped

    def _fillers(self, ids: torch.Tensor, masks: list[int], logits: torch.Tensor, k: int,
                 wanted: np.ndarray | None) -> list[Any]:
        """The ``k`` best fillers of each mask of one text (``logits``: one row per mask)."""
        single = len(masks) == 1
        rows = []
        for position, row_logits in zip(masks, logits):
            probs = row_logits.softmax(-1)
            if wanted is not None:
                probs = probs[torch.from_numpy(wanted)]
            values, order = probs.topk(k)
            row = []
            for score, choice in zip(values.tolist(), order.tolist()):
                token = int(wanted[choice]) if wanted is not None else choice
                filled = ids.clone()
                filled[position] = token
                filled = filled[filled != self.tokenizer.pad_token_id]  # as Hugging Face: [PAD] never shows
                # With several masks the others stay visible, so special tokens are only dropped for one.
                row.append({"score": score, "token": token, "token_str": self.tokenizer.decode([token]),
                            "sequence": self.tokenizer.decode(filled.tolist(), skip_special_tokens=single)})
            rows.append(row)
        return rows[0] if single else rows


@register_pipeline("fill-mask")
def build_fill_mask(model: Any, tokenizer: Any = None, **kwargs: Any) -> FillMaskPipeline:
    """``pipeline("fill-mask", model=FOLDER or model, tokenizer=None, top_k=5, targets=None, batch_size=8)``."""
    model, tokenizer = load_text_model(model, tokenizer, "fill-mask")
    check_head(model, "fill-mask", "ForMaskedLM")
    return FillMaskPipeline(model, tokenizer, **kwargs)
