"""Greedy decoding with prompt-lookup speculation: guess several tokens, check them in one call.

Batch-1 decoding reads every weight once per token, so its speed is the memory bandwidth divided
by the model's size. Prompt lookup (Saxena, 2023) guesses the next tokens by finding the latest
earlier occurrence of the last few tokens in the text so far and copying what followed it; the
model then scores the current token and all guesses in one call, which reads the weights once.
Guesses are kept while they equal the model's greedy choice, and the first disagreement is
replaced by the model's own token, so the output is the greedy output (up to float rounding
between a one-token and a several-token call, which can flip exact near-ties). Rejected guesses
are removed from the caches (``crop``). It pays off when text repeats (code, extraction,
summaries of a given document, models that loop) and costs little when it does not: a step
without a guess is a normal step.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from polyformer.generation.stopping import StopStrings


def propose_continuation(tokens: list[int], max_ngram: int, count: int) -> list[int]:
    """Up to ``count`` tokens that followed an earlier occurrence of the last n tokens.

    n goes from ``max_ngram`` down to 1. The latest occurrence that is followed by ``count``
    tokens wins (recent context predicts best); when none is, the occurrence followed by the most
    tokens (in a short loop the latest occurrence sits just before the end, with little after
    it). An empty list when nothing matches.
    """
    if count < 1:
        return []
    length = len(tokens)
    for n in range(min(max_ngram, length - 1), 0, -1):
        tail = tokens[length - n:]
        best: list[int] = []
        for start in range(length - n - 1, -1, -1):  # latest occurrence first
            if tokens[start : start + n] == tail:
                follow = tokens[start + n : start + n + count]
                if len(follow) == count:
                    return follow
                if len(follow) > len(best):
                    best = follow
        if best:
            return best
    return []


def can_speculate(model: Any, caches: Any) -> bool:
    """Whether every cache of ``model`` can forget rejected positions."""
    return hasattr(model, "crop_caches") and bool(getattr(model, "can_crop_caches", lambda c: False)(caches))


def greedy_with_prompt_lookup(
    model: Any,
    caches: Any,
    prompt: list[int],
    first_logits: Tensor,
    *,
    max_new_tokens: int,
    guesses: int,
    max_ngram: int,
    eos: frozenset[int],
    stops: StopStrings,
    put: Callable[[int], None],
) -> tuple[list[int], str]:
    """Continue one prompt whose logits after the prompt are ``first_logits`` (V,).

    Returns the new tokens and why it stopped ("eos", "stop_string" or "length"). ``put`` receives
    each token as it is accepted.
    """
    history = list(prompt)
    new: list[int] = []
    cached = len(prompt)

    def emit(token: int) -> str | None:
        new.append(token)
        history.append(token)
        put(token)
        if token in eos:
            return "eos"
        if stops and stops.hit(0, new):
            return "stop_string"
        return "length" if len(new) == max_new_tokens else None

    token = int(first_logits.argmax())
    while True:
        stopped = emit(token)
        if stopped:
            return new, stopped
        # a check of k guesses yields up to k + 1 tokens
        draft = propose_continuation(history, max_ngram, min(guesses, max_new_tokens - len(new) - 1))
        ids = torch.tensor([[token, *draft]], device=first_logits.device)
        logits = model(ids, caches=caches, logits_to_keep=len(draft) + 1).logits[0]  # (k + 1, V)
        choices = logits.argmax(dim=-1).tolist()
        accepted = 0
        while accepted < len(draft) and draft[accepted] == choices[accepted]:
            stopped = emit(draft[accepted])
            accepted += 1
            if stopped:
                return new, stopped
        cached += 1 + accepted
        if accepted < len(draft):
            model.crop_caches(caches, cached)  # forget the rejected guesses
        token = choices[accepted]
