"""When a sequence is finished: an end-of-sequence token, or a stop string in the decoded text."""

from __future__ import annotations

from typing import Callable, Sequence

from polyformer.errors import ConfigError


def trim_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    """``text`` cut before the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class StopStrings:
    """Watches the decoded text of each row's new tokens for any of ``stop_strings``.

    ``decode`` turns a list of token ids into text (a tokenizer's ``decode``). Only the tail of the
    text that can contain a new match is searched at each step.
    """

    def __init__(self, stop_strings: Sequence[str], decode: Callable[[list[int]], str] | None) -> None:
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        self.stop_strings = [s for s in stop_strings]
        if any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise ConfigError(f"stop strings must be non-empty strings, got {list(stop_strings)!r}")
        if self.stop_strings and decode is None:
            raise ConfigError("stop strings need a tokenizer to decode the generated tokens; pass decode=tokenizer.decode")
        self.decode = decode
        self._longest = max((len(s) for s in self.stop_strings), default=0)
        self._searched: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.stop_strings)

    def hit(self, row: int, tokens: list[int]) -> bool:
        """Whether the text of ``tokens`` (the row's generated tokens so far) contains a stop string."""
        while len(self._searched) <= row:
            self._searched.append(0)
        text = self.decode(tokens)  # type: ignore[misc]
        # a margin: the last characters may change when a multi-byte character completes
        start = max(0, self._searched[row] - self._longest - 4)
        self._searched[row] = len(text)
        return any(s in text[start:] for s in self.stop_strings)
