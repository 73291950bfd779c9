"""``pipeline("question-answering", model=FOLDER)``: a question and a context in, the answer span out.

Output as Hugging Face's extractive QA pipeline (transformers 4.x; 5.x dropped the task):
``{"score", "start", "end", "answer"}`` for one question with ``top_k=1``, a list of such dicts
otherwise. Inputs: ``qa(question=..., context=...)``, ``qa({"question": ..., "context": ...})``, or
lists of either.

How a span is scored: the pair ``[CLS] question [SEP] context [SEP]`` is cut into windows of
``max_seq_len`` tokens that overlap by ``doc_stride`` context tokens; in each window the start
and end logits of tokens outside the context (except ``[CLS]``) are masked, each is softmaxed,
and a span's score is ``p_start(s) · p_end(e)`` for ``s <= e < s + max_answer_len``. Spans are
widened to whole words and read from the context's characters. With
``handle_impossible_answer`` the empty answer competes with the smallest ``p_start([CLS]) ·
p_end([CLS])`` over the windows. Windows of every question go through the model ``batch_size`` (8)
at a time, each batch padded to its longest window.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polyformer.errors import ConfigError, DataError
from polyformer.pipelines import register_pipeline
from polyformer.pipelines.text_base import (check_batch_size, check_head, check_top_k, forward_batches, load_text_model,
                                            softmax)

__all__ = ["QuestionAnsweringPipeline", "best_spans"]

MASKED = -10000.0  # the logit given to tokens that cannot be part of an answer


def best_spans(start: np.ndarray, end: np.ndarray, allowed: np.ndarray, top_k: int,
               max_answer_len: int) -> list[tuple[int, int, float]]:
    """The ``top_k`` (start, end, p_start · p_end) with start <= end < start + max_answer_len, both allowed.

    ``start`` / ``end`` are probabilities over one window's tokens, ``allowed`` marks the tokens
    an answer may begin or end on. The outer product is masked to the band of valid spans; the
    best spans are ranked first and those touching a forbidden token dropped afterwards, so a
    window may give fewer than ``top_k`` (as Hugging Face's ``decode_spans``).
    """
    scores = np.tril(np.triu(np.outer(start, end)), max_answer_len - 1)  # (T, T), zero outside the band
    flat = scores.ravel()
    order = np.argsort(-flat, kind="stable")[:top_k]
    out = []
    for index in order:
        s, e = divmod(int(index), scores.shape[1])
        if allowed[s] and allowed[e]:
            out.append((s, e, float(flat[index])))
    return out


class QuestionAnsweringPipeline:
    """An extractive QA model (start / end logits) and its tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, **defaults: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = check_batch_size(batch_size)
        limit = min(384, tokenizer.model_max_length or 384)
        self.defaults = {"top_k": 1, "doc_stride": min(128, limit // 2), "max_answer_len": 15, "max_seq_len": limit,
                         "handle_impossible_answer": False, "align_to_words": True}
        self.defaults = self._options(defaults)

    def _options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ConfigError(f"unknown question-answering option(s) {unknown}; valid: {', '.join(self.defaults)}")
        options = {**self.defaults, **overrides}
        check_top_k(options["top_k"])
        for name in ("max_answer_len", "max_seq_len"):
            if not isinstance(options[name], int) or options[name] < 1:
                raise ConfigError(f"{name} must be a positive integer, got {options[name]!r}")
        if not isinstance(options["doc_stride"], int) or not 0 <= options["doc_stride"] < options["max_seq_len"]:
            raise ConfigError(f"doc_stride must be an integer in [0, max_seq_len={options['max_seq_len']}), "
                              f"got {options['doc_stride']!r}")
        return options

    def __call__(self, *args: Any, question: Any = None, context: Any = None, batch_size: int | None = None,
                 **options: Any) -> Any:
        """Answer each (question, context); see the module docstring for inputs and outputs."""
        settings = self._options(options)
        size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        examples, single = _examples(args, question, context)
        answers = self._answers(examples, settings, size)
        if settings["top_k"] == 1:
            answers = [a[0] for a in answers]
        return answers[0] if single else answers

    def _answers(self, examples: list[tuple[str, str]], o: dict[str, Any], batch_size: int) -> list[list[dict[str, Any]]]:
        """The ``top_k`` answers of each example; the windows of all examples are batched together."""
        windows = self.tokenizer([q for q, _ in examples], [c for _, c in examples], truncation="only_second",
                                 max_length=o["max_seq_len"], stride=o["doc_stride"], return_overflowing_tokens=True,
                                 return_offsets_mapping=True, padding=True, return_tensors="pt")
        owners = windows["overflow_to_sample_mapping"].tolist()
        by_window: list[list[dict[str, Any]]] = [[] for _ in owners]
        null_scores = [1e6] * len(examples)
        for rows, chunk, output in forward_batches(self.model, windows, batch_size):
            starts = output.start_logits.float().cpu().numpy().astype(np.float64)  # (B, T)
            ends = output.end_logits.float().cpu().numpy().astype(np.float64)
            for j, w in enumerate(rows):
                owner = owners[w]
                context = examples[owner][1]
                width = starts.shape[1]
                sequence = windows.sequence_ids(w)[:width]
                allowed = np.array([s == 1 for s in sequence]) & (chunk["attention_mask"][j].numpy() == 1)
                cls = chunk["input_ids"][j].numpy() == self.tokenizer.cls_token_id
                allowed_or_cls = allowed | cls  # [CLS] stays in the softmax: it is where "no answer" lives
                start = softmax(np.where(allowed_or_cls, starts[j], MASKED))
                end = softmax(np.where(allowed_or_cls, ends[j], MASKED))
                if o["handle_impossible_answer"]:
                    null_scores[owner] = min(null_scores[owner], float(start[0] * end[0]))
                start[0] = end[0] = 0.0
                for s, e, score in best_spans(start, end, allowed_or_cls, o["top_k"], o["max_answer_len"]):
                    begin, finish = self._characters(windows, w, s, e, o["align_to_words"])
                    by_window[w].append({"score": score, "start": begin, "end": finish,
                                         "answer": context[begin:finish]})
        candidates: list[list[dict[str, Any]]] = [[] for _ in examples]
        for w, owner in enumerate(owners):  # window order, whatever order the batches ran in
            candidates[owner].extend(by_window[w])
        out = []
        for found, null_score in zip(candidates, null_scores):
            if o["handle_impossible_answer"]:
                found.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
            # a stable sort: equal scores keep window order
            found.sort(key=lambda a: a["score"], reverse=True)
            out.append(found[: o["top_k"]])
        return out

    @staticmethod
    def _characters(windows: Any, w: int, s: int, e: int, align_to_words: bool) -> tuple[int, int]:
        """Characters of tokens s..e in the context, widened to whole words when ``align_to_words``."""
        offsets = windows["offset_mapping"][w].tolist()
        if not align_to_words:
            return offsets[s][0], offsets[e][1]
        encoding = windows.encodings[w]
        start_word, end_word = encoding.token_to_word(s), encoding.token_to_word(e)
        if start_word is None or end_word is None:
            return offsets[s][0], offsets[e][1]
        return (encoding.word_to_chars(start_word, sequence_index=1)[0],
                encoding.word_to_chars(end_word, sequence_index=1)[1])


def _examples(args: tuple[Any, ...], question: Any, context: Any) -> tuple[list[tuple[str, str]], bool]:
    """(question, context) pairs from keywords, a dict, or a list of dicts; and whether one was given."""
    if question is not None or context is not None:
        if args or question is None or context is None:
            raise DataError("question-answering takes question= and context= together (or dicts, not both)")
        if isinstance(question, str) and isinstance(context, str):
            return [(question, context)], True
        questions = [question] if isinstance(question, str) else list(question)
        contexts = [context] * len(questions) if isinstance(context, str) else list(context)
        if len(questions) != len(contexts):
            raise DataError(f"{len(questions)} questions but {len(contexts)} contexts")
        return _checked(list(zip(questions, contexts))), False
    if len(args) != 1:
        raise DataError("question-answering takes question=..., context=... or {'question': ..., 'context': ...}")
    given = args[0]
    single = isinstance(given, dict)
    items = [given] if single else list(given)
    pairs = []
    for item in items:
        if not isinstance(item, dict) or set(item) != {"question", "context"}:
            raise DataError(f"each input must be {{'question': ..., 'context': ...}}, got {item!r}"[:200])
        pairs.append((item["question"], item["context"]))
    return _checked(pairs), single


def _checked(pairs: list[tuple[Any, Any]]) -> list[tuple[str, str]]:
    if not pairs:
        raise DataError("question-answering needs at least one question")
    for question, context in pairs:
        if not isinstance(question, str) or not isinstance(context, str) or not question.strip() or not context.strip():
            raise DataError("question and context must both be non-empty strings")
    return pairs


@register_pipeline("question-answering")
def build_question_answering(model: Any, tokenizer: Any = None, **kwargs: Any) -> QuestionAnsweringPipeline:
    """``pipeline("question-answering", model=FOLDER or model, tokenizer=None, top_k=1, doc_stride=128, batch_size=8, ...)``."""
    model, tokenizer = load_text_model(model, tokenizer, "question-answering")
    check_head(model, "question-answering", "ForQuestionAnswering")
    return QuestionAnsweringPipeline(model, tokenizer, **kwargs)
