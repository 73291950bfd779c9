"""Printing generated text while it is produced."""

from __future__ import annotations

import sys
from typing import Callable, Sequence, TextIO

from polyformer.generation.stopping import trim_at_stop


class TextStreamer:
    """Writes the text of one row's new tokens as they arrive (row 0 by default).

    Text is held back while it might still change: a trailing incomplete UTF-8 character (decoded
    as U+FFFD) and any ending that could be the start of a stop string. A stop string itself is
    never written. ``prefix`` (e.g. the prompt) is written with the first token.
    """

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        stop_strings: Sequence[str] = (),
        out: TextIO | None = None,
        row: int = 0,
        prefix: str = "",
    ) -> None:
        self.decode, self.stop_strings, self.row = decode, tuple(stop_strings), row
        self.out = out if out is not None else sys.stdout
        self.tokens: list[int] = []
        self.written = 0  # characters of the text already written
        self.prefix = prefix

    def put(self, tokens: list[int | None]) -> None:
        self._write_prefix()
        token = tokens[self.row]
        if token is None:
            return
        self.tokens.append(token)
        self._write(final=False)

    def end(self) -> None:
        self._write_prefix()
        self._write(final=True)
        self.out.write("\n")
        self.out.flush()

    def _write_prefix(self) -> None:
        if self.prefix:
            self.out.write(self.prefix)
            self.out.flush()
            self.prefix = ""

    def _write(self, final: bool) -> None:
        text, stopped = trim_at_stop(self.decode(self.tokens), self.stop_strings)
        if not final and not stopped:
            text = text.rstrip("\ufffd")
            hold = max((k for s in self.stop_strings for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
            text = text[: len(text) - hold]
        if len(text) > self.written:
            self.out.write(text[self.written:])
            self.out.flush()
            self.written = len(text)
