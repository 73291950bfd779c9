"""``pipeline("token-classification", model=FOLDER)`` (alias ``"ner"``): tagged tokens or entities,
in Hugging Face's format.

``aggregation_strategy="none"`` gives one dict per token that is not tagged "O": ``entity``,
``score``, ``index`` (its position in the tokenized input), ``word`` (the token), ``start``,
``end`` (characters in the text). The other strategies merge tokens into entities with
``entity_group`` in place of ``entity``:

* ``"simple"``: adjacent tokens with the same tag (``B-X`` starts a new entity, ``I-X`` continues);
* ``"first"`` / ``"average"`` / ``"max"``: first make every word agree on one tag (its first
  piece's, the average of its pieces' scores, or the most confident piece's), then group as
  "simple" does; words are read from the tokenizer's word ids.

Texts longer than the tokenizer's ``model_max_length`` are cut there, unless ``stride`` is given:
then the text is read in windows of ``model_max_length`` tokens that overlap by ``stride`` tokens,
each window is tagged and grouped on its own, and of entities that overlap across windows the
longest (then the most confident) is kept, as Hugging Face does; this needs an aggregation
strategy other than "none". Texts (or windows) go through the model ``batch_size`` (8) at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polyformer.errors import ConfigError, DataError
from polyformer.pipelines import register_pipeline
from polyformer.pipelines.text_base import (check_batch_size, check_head, forward_batches, load_text_model,
                                            model_labels, softmax)

__all__ = ["TokenClassificationPipeline"]

STRATEGIES = ("none", "simple", "first", "average", "max")


class TokenClassificationPipeline:
    """A token classifier and its tokenizer, with Hugging Face's entity aggregation."""

    def __init__(self, model: Any, tokenizer: Any, *, aggregation_strategy: str = "none",
                 ignore_labels: list[str] | None = None, stride: int | None = None, batch_size: int = 8) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.id2label = model_labels(model, "token-classification")
        self.aggregation_strategy = _strategy(aggregation_strategy)
        self.ignore_labels = ["O"] if ignore_labels is None else list(ignore_labels)
        self.batch_size = check_batch_size(batch_size)
        self.stride = self._stride(stride, self.aggregation_strategy)

    def _stride(self, stride: Any, strategy: str) -> int | None:
        if stride is None:
            return None
        limit = self.tokenizer.model_max_length
        if limit is None:
            raise ConfigError("stride needs a tokenizer with a model_max_length (the window size); this one has none")
        if not isinstance(stride, int) or isinstance(stride, bool) or not 0 <= stride < limit:
            raise ConfigError(f"stride must be an integer in [0, model_max_length={limit}), got {stride!r}")
        if strategy == "none":
            raise ConfigError('stride reads long texts in windows, whose tokens are merged as entities: choose '
                              'aggregation_strategy "simple", "first", "average" or "max" (not "none")')
        return stride

    def __call__(self, inputs: str | list[str], aggregation_strategy: str | None = None,
                 ignore_labels: list[str] | None = None, stride: int | None = None,
                 batch_size: int | None = None) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Entities of one text (a list of dicts) or of each text of a list."""
        strategy = _strategy(aggregation_strategy or self.aggregation_strategy)
        ignore = self.ignore_labels if ignore_labels is None else list(ignore_labels)
        # checked again here: a stride set at construction still needs a grouping strategy
        stride = self._stride(self.stride if stride is None else stride, strategy)
        size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise DataError("token-classification takes a string or a non-empty list of strings")
        windowed = {"return_overflowing_tokens": True, "stride": stride} if stride is not None else {}
        encoded = self.tokenizer(texts, return_tensors="pt", truncation=True, padding=True, **windowed)
        owners = encoded["overflow_to_sample_mapping"].tolist() if windowed else list(range(len(texts)))
        per_window: list[list[dict[str, Any]]] = [[] for _ in owners]
        for rows, _, output in forward_batches(self.model, encoded, size):
            logits = output.logits.float().cpu().numpy().astype(np.float64)  # (B, T, labels)
            for j, row in enumerate(rows):
                text = texts[owners[row]]
                per_window[row] = self._entities(text, encoded.encodings[row], softmax(logits[j]), strategy, ignore)
        results: list[list[dict[str, Any]]] = [[] for _ in texts]
        windows = [0] * len(texts)
        for row, owner in enumerate(owners):  # windows of one text are consecutive rows, in order
            results[owner].extend(per_window[row])
            windows[owner] += 1
        results = [_overlaps_resolved(r) if n > 1 else r for r, n in zip(results, windows)]
        return results[0] if single else results

    def _entities(self, text: str, encoding: Any, scores: np.ndarray, strategy: str,
                  ignore: list[str]) -> list[dict[str, Any]]:
        """Tagged tokens (or grouped entities) of one window, without the ignored labels."""
        tokens = self._tokens(text, encoding, scores)
        if strategy in ("none", "simple"):
            entities = [self._tag(t) for t in tokens]
        else:
            entities = [self._word(group, strategy) for group in _words(tokens)]
        if strategy != "none":
            entities = self._group(entities)
        return [e for e in entities if e.get("entity", e.get("entity_group")) not in ignore]

    def _tokens(self, text: str, encoding: Any, scores: np.ndarray) -> list[dict[str, Any]]:
        """Every real, non-special token with its scores, characters and whether it continues the previous word."""
        out, previous_word = [], None
        word_ids = encoding.word_ids
        for index, token_id in enumerate(encoding.ids):
            if encoding.special_tokens_mask[index] or not encoding.attention_mask[index]:
                continue
            start, end = encoding.offsets[index]
            word = self.tokenizer.convert_ids_to_tokens(token_id)
            continues = word_ids[index] is not None and word_ids[index] == previous_word
            if token_id == self.tokenizer.unk_token_id:  # show the text the unknown token stands for
                word, continues = text[start:end], False
            previous_word = word_ids[index]
            out.append({"word": word, "scores": scores[index], "start": start, "end": end, "index": index,
                        "is_subword": continues})
        return out

    def _tag(self, token: dict[str, Any]) -> dict[str, Any]:
        best = int(token["scores"].argmax())
        return {"entity": self.id2label[best], "score": float(token["scores"][best]), "index": token["index"],
                "word": token["word"], "start": token["start"], "end": token["end"]}

    def _word(self, pieces: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
        """One tag for a word's pieces (first piece, the mean of their scores, or the most confident piece)."""
        if strategy == "first":
            scores = pieces[0]["scores"]
        elif strategy == "max":
            scores = max(pieces, key=lambda p: p["scores"].max())["scores"]
        else:
            scores = np.nanmean(np.stack([p["scores"] for p in pieces]), axis=0)
        best = int(scores.argmax())
        return {"entity": self.id2label[best], "score": float(scores[best]),
                "word": self.tokenizer.convert_tokens_to_string([p["word"] for p in pieces]),
                "start": pieces[0]["start"], "end": pieces[-1]["end"]}

    def _group(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Adjacent entities with one tag become one (a ``B-`` tag always starts a new one)."""
        groups: list[list[dict[str, Any]]] = []
        for entity in entities:
            bi, tag = _split_tag(entity["entity"])
            if groups and bi != "B" and _split_tag(groups[-1][-1]["entity"])[1] == tag:
                groups[-1].append(entity)
            else:
                groups.append([entity])
        # the group is named after its first tag without any "B-"/"I-"-style prefix
        return [{"entity_group": g[0]["entity"].split("-", 1)[-1], "score": float(np.nanmean([e["score"] for e in g])),
                 "word": self.tokenizer.convert_tokens_to_string([e["word"] for e in g]),
                 "start": g[0]["start"], "end": g[-1]["end"]} for g in groups]


def _overlaps_resolved(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entities of overlapping windows, by start; of two that overlap the longer (then the more confident) stays."""
    kept: list[dict[str, Any]] = []
    for entity in sorted(entities, key=lambda e: e["start"]):
        if kept and kept[-1]["start"] <= entity["start"] < kept[-1]["end"]:
            length, previous = entity["end"] - entity["start"], kept[-1]["end"] - kept[-1]["start"]
            if length > previous or (length == previous and entity["score"] > kept[-1]["score"]):
                kept[-1] = entity
        else:
            kept.append(entity)
    return kept


def _words(tokens: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    words: list[list[dict[str, Any]]] = []
    for token in tokens:
        if words and token["is_subword"]:
            words[-1].append(token)
        else:
            words.append([token])
    return words


def _split_tag(label: str) -> tuple[str, str]:
    """("B" or "I", the entity type): ``B-PER`` -> ("B", "PER"); a label without a prefix continues ("I")."""
    if label.startswith("B-") or label.startswith("I-"):
        return label[0], label[2:]
    return "I", label


def _strategy(name: Any) -> str:
    if not isinstance(name, str) or name.lower() not in STRATEGIES:
        raise ConfigError(f"aggregation_strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    return name.lower()


@register_pipeline("token-classification")
def build_token_classification(model: Any, tokenizer: Any = None, **kwargs: Any) -> TokenClassificationPipeline:
    """``pipeline("token-classification", model=FOLDER or model, tokenizer=None, aggregation_strategy="none",
    stride=None, batch_size=8)``."""
    model, tokenizer = load_text_model(model, tokenizer, "token-classification")
    check_head(model, "token-classification", "ForTokenClassification")
    return TokenClassificationPipeline(model, tokenizer, **kwargs)


register_pipeline("ner")(build_token_classification)  # Hugging Face's other name for the task
