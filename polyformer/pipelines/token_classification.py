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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polyformer.errors import ConfigError, DataError
from polyformer.pipelines import register_pipeline
from polyformer.pipelines.text_base import forward, load_text_model, model_labels, softmax

__all__ = ["TokenClassificationPipeline"]

STRATEGIES = ("none", "simple", "first", "average", "max")


class TokenClassificationPipeline:
    """A token classifier and its tokenizer, with Hugging Face's entity aggregation."""

    def __init__(self, model: Any, tokenizer: Any, *, aggregation_strategy: str = "none",
                 ignore_labels: list[str] | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.id2label = model_labels(model, "token-classification")
        self.aggregation_strategy = _strategy(aggregation_strategy)
        self.ignore_labels = ["O"] if ignore_labels is None else list(ignore_labels)

    def __call__(self, inputs: str | list[str], aggregation_strategy: str | None = None,
                 ignore_labels: list[str] | None = None) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Entities of one text (a list of dicts) or of each text of a list."""
        strategy = _strategy(aggregation_strategy or self.aggregation_strategy)
        ignore = self.ignore_labels if ignore_labels is None else list(ignore_labels)
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise DataError("token-classification takes a string or a non-empty list of strings")
        results = [self._one(text, strategy, ignore) for text in texts]
        return results[0] if single else results

    def _one(self, text: str, strategy: str, ignore: list[str]) -> list[dict[str, Any]]:
        inputs = self.tokenizer(text, return_tensors="pt", truncation=True, return_offsets_mapping=True,
                                return_special_tokens_mask=True)
        scores = softmax(forward(self.model, inputs).logits[0].float().cpu().numpy().astype(np.float64))
        tokens = self._tokens(text, inputs, scores)
        if strategy in ("none", "simple"):
            entities = [self._tag(t) for t in tokens]
        else:
            entities = [self._word(group, strategy) for group in _words(tokens)]
        if strategy != "none":
            entities = self._group(entities)
        return [e for e in entities if e.get("entity", e.get("entity_group")) not in ignore]

    def _tokens(self, text: str, inputs: Any, scores: np.ndarray) -> list[dict[str, Any]]:
        """Every non-special token with its scores, characters and whether it continues the previous word."""
        ids = inputs["input_ids"][0].tolist()
        special = inputs["special_tokens_mask"][0].tolist()
        offsets = inputs["offset_mapping"][0].tolist()
        word_ids = inputs.word_ids(0)
        out, previous_word = [], None
        for index, token_id in enumerate(ids):
            if special[index]:
                continue
            start, end = offsets[index]
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
    """``pipeline("token-classification", model=FOLDER or model, tokenizer=None, aggregation_strategy="none")``."""
    model, tokenizer = load_text_model(model, tokenizer, "token-classification")
    return TokenClassificationPipeline(model, tokenizer, **kwargs)


register_pipeline("ner")(build_token_classification)  # Hugging Face's other name for the task
