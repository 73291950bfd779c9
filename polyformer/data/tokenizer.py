"""Tokenizers for corpus preparation: a byte-level BPE trained on the corpus, or a given one.

Byte-level BPE (GPT-2's scheme) never meets an unknown character: every text is a sequence of
bytes, and merges learned from the corpus shorten it. Training is deterministic for a given
text and vocabulary size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from polyformer.errors import ConfigError, DataError

END_OF_TEXT = "<|endoftext|>"  # separates documents in the token stream (GPT-2's name for it)
MIN_VOCAB = 257  # the 256 byte symbols and the end-of-text token


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    """A byte-level BPE ``tokenizers.Tokenizer`` with ``vocab_size`` entries learned from ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < MIN_VOCAB:
        raise ConfigError(f"vocab_size must be at least {MIN_VOCAB} (256 bytes + end-of-text), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer)
    return tokenizer


def load_tokenizer(path: str | Path):
    """A tokenizer saved as a Hugging Face ``tokenizer.json`` (e.g. GPT-2's)."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer file {str(path)!r} does not exist; give a Hugging Face tokenizer.json")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust library raises a generic Exception for a malformed file
        raise DataError(f"{str(path)!r} is not a valid tokenizer.json ({error})") from None


def end_of_text_id(tokenizer) -> int | None:
    """The id of the end-of-text token, if the vocabulary has one."""
    return tokenizer.token_to_id(END_OF_TEXT)
