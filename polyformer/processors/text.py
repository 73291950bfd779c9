"""Text <-> token ids with Hugging Face's ``tokenizers`` library: GPT-2's byte-level BPE.

Load a tokenizer the way GPT-2 checkpoints ship it (``vocab.json`` + ``merges.txt``, or one
``tokenizer.json``), or train a new byte-level BPE on local text files:

    tokenizer = TextTokenizer.from_pretrained("gpt2-folder")
    batch = tokenizer(["Hello", "A longer prompt"])        # left-padded tensors for generation
    tokenizer.decode(batch["input_ids"][0].tolist())

    tokenizer = train_bpe(["corpus.txt"], vocab_size=8000)
    tokenizer.save_pretrained("my-tokenizer")
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from torch import Tensor

from polyformer.errors import ConfigError, DataError
from polyformer.files import fsync_dir
from polyformer.processors.base import missing_files_error, register_processor

ENDOFTEXT = "<|endoftext|>"


def _byte_level_bpe(model) -> "tokenizers.Tokenizer":  # noqa: F821
    """A tokenizer around a BPE ``model`` with GPT-2's byte-level pre-tokenizer and decoder."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors

    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with GPT-2's conventions: special tokens, padding, tensors.

    ``eos_token`` ends documents (GPT-2's ``<|endoftext|>``); ``pad_token`` pads batches (None =
    the eos token, as GPT-2 has no pad token); ``padding_side`` is "left" so that batches are
    ready for generation.
    """

    def __init__(
        self,
        tokenizer: "tokenizers.Tokenizer",  # noqa: F821
        *,
        eos_token: str | None = ENDOFTEXT,
        pad_token: str | None = None,
        padding_side: str = "left",
    ) -> None:
        from tokenizers import AddedToken

        if padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.tokenizer = tokenizer
        self.eos_token, self.pad_token, self.padding_side = eos_token, pad_token, padding_side
        specials = [t for t in (eos_token, pad_token) if t is not None]
        missing = [t for t in specials if tokenizer.token_to_id(t) is None]
        if missing:
            raise ConfigError(f"special token(s) {missing} are not in the vocabulary; add them when training "
                              "(special_tokens=...) or pass eos_token=None")
        # Special tokens are matched whole in the text, never split by the BPE.
        tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def from_files(cls, vocab_file: str | Path, merges_file: str | Path, **kwargs) -> "TextTokenizer":
        """GPT-2's two files: ``vocab.json`` (token -> id) and ``merges.txt`` (merge rules)."""
        from tokenizers import models

        for path in (vocab_file, merges_file):
            if not Path(path).is_file():
                raise DataError(f"{path}: no such tokenizer file")
        try:
            model = models.BPE.from_file(str(vocab_file), str(merges_file))
        except Exception as error:  # the Rust side raises plain Exceptions with its message
            raise DataError(f"cannot read {vocab_file} / {merges_file} as a BPE vocabulary ({error})") from None
        return cls(_byte_level_bpe(model), **kwargs)

    @classmethod
    def from_file(cls, tokenizer_file: str | Path, **kwargs) -> "TextTokenizer":
        """One ``tokenizer.json`` (Hugging Face's full tokenizer description)."""
        from tokenizers import Tokenizer

        if not Path(tokenizer_file).is_file():
            raise DataError(f"{tokenizer_file}: no such tokenizer file")
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as error:
            raise DataError(f"{tokenizer_file} is not a valid tokenizer.json ({error})") from None
        return cls(tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs) -> "TextTokenizer":
        """The tokenizer in a model folder: ``tokenizer.json``, else ``vocab.json`` + ``merges.txt``.

        Special tokens come from ``tokenizer_config.json`` when present (``eos_token``,
        ``pad_token``); keyword arguments override them. Padding stays on the left (generation).
        """
        folder = Path(folder)
        settings = _read_tokenizer_config(folder)
        settings.update(kwargs)
        if (folder / "tokenizer.json").is_file():
            return cls.from_file(folder / "tokenizer.json", **settings)
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return cls.from_files(folder / "vocab.json", folder / "merges.txt", **settings)
        error = missing_files_error(folder, "tokenizer.json (or vocab.json + merges.txt)",
                                    "tokenizer.save_pretrained(folder)")
        raise DataError(f"no tokenizer found: {error}")

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``tokenizer.json``, ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and
        ``special_tokens_map.json``, each atomically (each is renamed into place whole)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".tokenizer.") as tmp:
            self.tokenizer.save(os.path.join(tmp, "tokenizer.json"))
            self.tokenizer.model.save(tmp)  # vocab.json + merges.txt
            config = {"tokenizer_class": "GPT2Tokenizer", "eos_token": self.eos_token, "bos_token": self.eos_token,
                      "unk_token": self.eos_token, "pad_token": self.pad_token, "padding_side": self.padding_side,
                      "add_prefix_space": False, "model_max_length": None}
            Path(tmp, "tokenizer_config.json").write_text(json.dumps(config, indent=2))
            specials = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if config[k]}
            Path(tmp, "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
            for name in os.listdir(tmp):  # tokenizer.json, the model's own files, tokenizer_config.json
                os.replace(os.path.join(tmp, name), folder / name)
        fsync_dir(folder)
        return folder

    # -- text <-> ids -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids (special tokens included)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self.tokenizer.token_to_id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        """The pad token's id (the eos id when there is no pad token)."""
        token = self.pad_token or self.eos_token
        return None if token is None else self.tokenizer.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``."""
        if not isinstance(text, str):
            raise DataError(f"encode expects a string, got {type(text).__name__}")
        return self.tokenizer.encode(text).ids

    def decode(self, ids: Sequence[int] | Tensor, skip_special_tokens: bool = False) -> str:
        """The text of ``ids`` (bytes of an incomplete UTF-8 character show as U+FFFD)."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def __call__(self, texts: str | Sequence[str]) -> dict[str, Tensor]:
        """``{"input_ids", "attention_mask"}`` (B, T) long tensors, padded on ``padding_side``."""
        if isinstance(texts, str):
            texts = [texts]
        rows = [self.encode(t) for t in texts]
        if any(not r for r in rows):
            raise DataError("an empty prompt has no tokens; give every text at least one character")
        width = max(len(r) for r in rows)
        pad = self.pad_token_id if self.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if self.padding_side == "left" else slice(0, len(row))
            ids[i, span] = torch.tensor(row)
            mask[i, span] = 1
        return {"input_ids": ids, "attention_mask": mask}


# GPT-2's tokenizer files, under both of Hugging Face's class names and the model types that use them
register_processor("tokenizer", TextTokenizer, names=["GPT2Tokenizer"], model_types=["gpt2", "gpt_neo", "gptj"])


def _read_tokenizer_config(folder: Path) -> dict:
    """eos/pad tokens and padding side from ``tokenizer_config.json`` (if any)."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON ({error})") from None

    def token(value):  # a string, or {"content": ...} in older files
        return value.get("content") if isinstance(value, dict) else value

    out = {}
    if "eos_token" in raw:
        out["eos_token"] = token(raw["eos_token"])
    if raw.get("pad_token") is not None:
        out["pad_token"] = token(raw["pad_token"])
    return out


def _lines(files: Sequence[str | Path]) -> Iterator[str]:
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as handle:
            yield from handle


def train_bpe(
    files: Sequence[str | Path] | None = None,
    *,
    texts: Iterable[str] | None = None,
    vocab_size: int = 8192,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = (ENDOFTEXT,),
    progress: bool = True,
) -> TextTokenizer:
    """Train a GPT-2-style byte-level BPE on local text ``files`` (or an iterable of ``texts``).

    Every byte is in the initial alphabet, so any text encodes; ``special_tokens`` get the first
    ids. A tqdm bar counts the lines read.
    """
    from tokenizers import models, pre_tokenizers, trainers
    from tqdm.auto import tqdm

    if (files is None) == (texts is None):
        raise ConfigError("train_bpe needs exactly one of files=[paths] or texts=<iterable of strings>")
    if files is not None:
        files = [files] if isinstance(files, (str, Path)) else list(files)
        missing = [str(f) for f in files if not Path(f).is_file()]
        if missing:
            raise DataError(f"training files not found: {', '.join(missing)}")
        texts = _lines(files)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if not isinstance(vocab_size, int) or vocab_size < len(alphabet) + len(special_tokens):
        raise ConfigError(f"vocab_size must be at least {len(alphabet) + len(special_tokens)} "
                          f"(256 byte symbols + special tokens), got {vocab_size!r}")
    tokenizer = _byte_level_bpe(models.BPE())
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(special_tokens), initial_alphabet=alphabet,
                                  show_progress=False)
    counted = _CountingIterator(texts)
    tokenizer.train_from_iterator(tqdm(counted, desc="BPE: reading", unit=" lines", disable=not progress),
                                  trainer=trainer)
    if counted.seen == 0:
        raise DataError("train_bpe: the corpus is empty")
    eos = ENDOFTEXT if ENDOFTEXT in special_tokens else None
    return TextTokenizer(tokenizer, eos_token=eos)


class _CountingIterator:
    """An iterator that remembers how many items passed through (to detect an empty corpus)."""

    def __init__(self, items: Iterable[str]) -> None:
        self.items, self.seen = iter(items), 0

    def __iter__(self) -> "_CountingIterator":
        return self

    def __next__(self) -> str:
        item = next(self.items)
        self.seen += 1
        return item
