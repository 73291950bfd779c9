"""What every ``tokenizers``-backed tokenizer shares: special tokens, batching, truncation, padding,
tensors, offsets and word ids, decoding. A family's tokenizer (WordPiece, CLIP's BPE, a character
vocabulary) only builds its ``tokenizers.Tokenizer`` and reads / writes its files.

Calls follow Hugging Face's tokenizers: ``tokenizer(text, text_pair, padding=..., truncation=...,
max_length=..., return_tensors="pt")`` returns a :class:`BatchEncoding` with ``input_ids``,
``token_type_ids``, ``attention_mask`` (and ``offset_mapping``, ``special_tokens_mask``,
``overflow_to_sample_mapping`` on request); a single text gives flat lists, a list gives rows.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from polyformer.errors import ConfigError, DataError
from polyformer.processors.base import read_json

__all__ = ["BatchEncoding", "SPECIAL_TOKEN_NAMES", "TokenizerBase", "read_tokenizer_settings"]

#: Hugging Face's names of special tokens, in the order ``special_tokens_map.json`` lists them
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
TRUNCATION = ("longest_first", "only_first", "only_second")
#: "no limit": Hugging Face writes this for tokenizers without a maximum length
VERY_LARGE = int(1e30)


class BatchEncoding(dict):
    """Model inputs (a dict) that also keep each row's ``tokenizers.Encoding`` for ``word_ids`` and friends."""

    def __init__(self, data: dict[str, Any], encodings: list[Any]) -> None:
        super().__init__(data)
        self.encodings = encodings

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def word_ids(self, index: int = 0) -> list[int | None]:
        """For each token of row ``index``: the index of the word it came from (None for special tokens)."""
        return self.encodings[index].word_ids

    def sequence_ids(self, index: int = 0) -> list[int | None]:
        """For each token of row ``index``: 0 (first text), 1 (second text) or None (special or padding)."""
        return self.encodings[index].sequence_ids

    def token_to_chars(self, index: int, token: int) -> tuple[int, int]:
        """(start, end) characters of ``token`` of row ``index`` in its own text."""
        return self.encodings[index].offsets[token]

    def to(self, device: Any) -> "BatchEncoding":
        """Move every tensor to ``device`` (in place); returns self."""
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device)
        return self


class TokenizerBase:
    """A ``tokenizers.Tokenizer`` with Hugging Face's calling conventions.

    ``special_tokens`` maps Hugging Face's names (``cls_token``, ``mask_token``, ...) to token
    strings; each must be in the vocabulary. Special tokens are matched whole in raw text (so
    ``"[MASK]"`` in a fill-mask prompt is one token), before any lower-casing.
    """

    #: ``tokenizer_class`` written to ``tokenizer_config.json``
    hf_class = ""

    def __init__(self, tokenizer: Any, special_tokens: dict[str, str | None], *, model_max_length: int | None = None,
                 padding_side: str = "right", truncation_side: str = "right") -> None:
        from tokenizers import AddedToken

        for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in ("left", "right"):
                raise ConfigError(f"{name} must be 'left' or 'right', got {side!r}")
        unknown = sorted(set(special_tokens) - set(SPECIAL_TOKEN_NAMES))
        if unknown:
            raise ConfigError(f"unknown special token name(s) {unknown}; valid: {', '.join(SPECIAL_TOKEN_NAMES)}")
        self.special_tokens = {k: v for k, v in special_tokens.items() if v is not None}
        missing = sorted({t for t in self.special_tokens.values() if tokenizer.token_to_id(t) is None})
        if missing:
            raise ConfigError(f"special token(s) {missing} are not in the vocabulary; add them to it or set them "
                              "to None in tokenizer_config.json")
        self.tokenizer = tokenizer
        # Settings stored in a tokenizer.json are defaults of Hugging Face's library, which every
        # call overrides; here each call sets its own, so none may linger.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                      for t in dict.fromkeys(self.special_tokens.values())])
        self.model_max_length = VERY_LARGE if model_max_length is None else int(model_max_length)
        self.padding_side, self.truncation_side = padding_side, truncation_side

    # -- special tokens -----------------------------------------------------------------------------
    def _special(self, name: str) -> str | None:
        return self.special_tokens.get(name)

    def _special_id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return None if token is None else self.tokenizer.token_to_id(token)

    unk_token = property(lambda self: self._special("unk_token"), doc="The unknown-word token.")
    sep_token = property(lambda self: self._special("sep_token"), doc="The separator token.")
    pad_token = property(lambda self: self._special("pad_token"), doc="The padding token.")
    cls_token = property(lambda self: self._special("cls_token"), doc="The classification token.")
    mask_token = property(lambda self: self._special("mask_token"), doc="The mask token (fill-mask).")
    bos_token = property(lambda self: self._special("bos_token"), doc="The beginning-of-text token.")
    eos_token = property(lambda self: self._special("eos_token"), doc="The end-of-text token.")
    unk_token_id = property(lambda self: self._special_id("unk_token"), doc="Id of the unknown-word token.")
    sep_token_id = property(lambda self: self._special_id("sep_token"), doc="Id of the separator token.")
    pad_token_id = property(lambda self: self._special_id("pad_token"), doc="Id of the padding token.")
    cls_token_id = property(lambda self: self._special_id("cls_token"), doc="Id of the classification token.")
    mask_token_id = property(lambda self: self._special_id("mask_token"), doc="Id of the mask token.")
    bos_token_id = property(lambda self: self._special_id("bos_token"), doc="Id of the beginning-of-text token.")
    eos_token_id = property(lambda self: self._special_id("eos_token"), doc="Id of the end-of-text token.")

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of every special token."""
        return sorted({self.tokenizer.token_to_id(t) for t in self.special_tokens.values()})

    @property
    def vocab_size(self) -> int:
        """Number of ids, added special tokens included."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        """token -> id."""
        return self.tokenizer.get_vocab(with_added_tokens=True)

    # -- tokens <-> ids -----------------------------------------------------------------------------
    def tokenize(self, text: str, text_pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        """The tokens of ``text`` (without special tokens by default, as Hugging Face's ``tokenize``)."""
        return self.tokenizer.encode(text, text_pair, add_special_tokens=add_special_tokens).tokens

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        """The ids of ``text`` (and ``text_pair``), special tokens included by default."""
        if not isinstance(text, str):
            raise DataError(f"encode expects a string, got {type(text).__name__}")
        return self.tokenizer.encode(text, text_pair, add_special_tokens=add_special_tokens).ids

    def convert_ids_to_tokens(self, ids: int | Sequence[int] | torch.Tensor) -> str | list[str]:
        """Token strings of ids (one string for one id)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        if isinstance(ids, (int, np.integer)):
            return self.tokenizer.id_to_token(int(ids))
        return [self.tokenizer.id_to_token(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Ids of token strings; a token not in the vocabulary gets the unknown token's id."""
        unk = self.unk_token_id

        def one(token: str) -> int:
            found = self.tokenizer.token_to_id(token)
            return unk if found is None else found

        return one(tokens) if isinstance(tokens, str) else [one(t) for t in tokens]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Tokens joined back into text by the tokenizer's decoder (``##`` pieces glued to their word)."""
        decoder = self.tokenizer.decoder
        return decoder.decode(list(tokens)) if decoder is not None else " ".join(tokens)

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """The text of ``ids``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        if isinstance(ids, (int, np.integer)):
            ids = [int(ids)]
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, rows: Sequence[Sequence[int]] | torch.Tensor, skip_special_tokens: bool = False) -> list[str]:
        """:meth:`decode` for each row."""
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in rows]

    # -- the call -----------------------------------------------------------------------------------
    def __call__(
        self,
        text: str | Sequence[str] | Sequence[Sequence[str]],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        return_tensors: str | None = None,
        return_token_type_ids: bool = True,
        return_attention_mask: bool = True,
        return_offsets_mapping: bool = False,
        return_special_tokens_mask: bool = False,
        return_overflowing_tokens: bool = False,
    ) -> BatchEncoding:
        """Texts (or text pairs) -> model inputs, as Hugging Face's tokenizers give them.

        ``padding``: False, True / "longest" (to the longest row) or "max_length" (on ``padding_side``).
        ``truncation``: True / "longest_first", "only_first", "only_second" or False, to
        ``max_length`` (default ``model_max_length``); ``stride`` tokens are repeated between a
        row and its overflow when ``return_overflowing_tokens`` (rows then map back to their text
        through ``overflow_to_sample_mapping``).
        """
        single, texts, pairs = self._batch(text, text_pair, is_split_into_words)
        strategy = self._strategy(truncation, padding, max_length)
        if max_length is None and (strategy or padding == "max_length"):
            max_length = self.model_max_length
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            raise ConfigError(f"max_length must be a positive integer, got {max_length!r}")
        inputs = texts if pairs is None else list(zip(texts, pairs))
        with self._truncating(strategy, max_length, stride):
            try:
                encodings = self.tokenizer.encode_batch(inputs, is_pretokenized=is_split_into_words,
                                                        add_special_tokens=add_special_tokens)
            except Exception as error:  # the Rust side raises plain Exceptions (e.g. a pair that cannot be cut)
                raise DataError(f"cannot tokenize the input: {error}") from None
        rows, sample = [], []
        for index, encoding in enumerate(encodings):
            for row in [encoding, *(encoding.overflowing if return_overflowing_tokens else [])]:
                rows.append(row)
                sample.append(index)
        self._pad(rows, padding, max_length)
        data: dict[str, Any] = {"input_ids": [r.ids for r in rows]}
        if return_token_type_ids:
            data["token_type_ids"] = [r.type_ids for r in rows]
        if return_attention_mask:
            data["attention_mask"] = [r.attention_mask for r in rows]
        if return_special_tokens_mask:
            data["special_tokens_mask"] = [r.special_tokens_mask for r in rows]
        if return_offsets_mapping:
            data["offset_mapping"] = [[tuple(o) for o in r.offsets] for r in rows]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample
        data = {k: _as_tensor(k, v, return_tensors) for k, v in data.items()}
        if single and not return_overflowing_tokens and return_tensors is None:
            data = {k: v[0] for k, v in data.items()}
        return BatchEncoding(data, rows)

    @staticmethod
    def _batch(text: Any, pair: Any, split: bool) -> tuple[bool, list[Any], list[Any] | None]:
        def is_one(value: Any) -> bool:
            if split:  # one pre-split text is a list of words
                return isinstance(value, (list, tuple)) and all(isinstance(w, str) for w in value)
            return isinstance(value, str)

        single = is_one(text)
        texts = [text] if single else list(text) if isinstance(text, (list, tuple)) else None
        if texts is None or not texts:
            raise DataError(f"expected a text or a non-empty list of texts, got {type(text).__name__}")
        for value in texts:
            if not is_one(value):
                raise DataError(f"every text must be a {'list of words' if split else 'string'}, got {type(value).__name__}")
        if pair is None:
            return single, texts, None
        pairs = [pair] if is_one(pair) else list(pair)
        if len(pairs) != len(texts) or not all(is_one(p) for p in pairs):
            raise DataError(f"text_pair must match text: {len(texts)} text(s) but {len(pairs)} pair(s)")
        return single, texts, pairs

    @staticmethod
    def _strategy(truncation: Any, padding: Any, max_length: int | None) -> str | None:
        if padding not in (False, True, None, "longest", "max_length", "do_not_pad"):
            raise ConfigError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        if truncation is None:
            # Hugging Face truncates when a max_length is given without padding to it
            return "longest_first" if max_length is not None and padding in (False, None, "do_not_pad") else None
        if truncation is True:
            return "longest_first"
        if truncation in (False, "do_not_truncate"):
            return None
        if truncation not in TRUNCATION:
            raise ConfigError(f"truncation must be True, False or one of {', '.join(TRUNCATION)}, got {truncation!r}")
        return truncation

    @contextmanager
    def _truncating(self, strategy: str | None, max_length: int | None, stride: int) -> Iterator[None]:
        if strategy is None or max_length is None or max_length >= VERY_LARGE:
            yield
            return
        if not isinstance(stride, int) or stride < 0 or stride >= max_length:
            raise ConfigError(f"stride must be an integer in [0, max_length={max_length}), got {stride!r}")
        self.tokenizer.enable_truncation(max_length, stride=stride, strategy=strategy, direction=self.truncation_side)
        try:
            yield
        finally:
            self.tokenizer.no_truncation()

    def _pad(self, rows: list[Any], padding: Any, max_length: int | None) -> None:
        if padding in (False, None, "do_not_pad"):
            return
        width = max(len(r.ids) for r in rows) if padding in (True, "longest") else max_length
        if self.pad_token_id is None:
            raise ConfigError("padding needs a pad_token; this tokenizer has none")
        for row in rows:  # Encoding.pad also pads word ids, offsets and masks
            row.pad(width, direction=self.padding_side, pad_id=self.pad_token_id, pad_type_id=0,
                    pad_token=self.pad_token)


def _as_tensor(key: str, rows: list[Any], return_tensors: str | None) -> Any:
    if return_tensors is None:
        return rows
    if return_tensors not in ("pt", "np"):
        raise ConfigError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
    if key != "overflow_to_sample_mapping" and len({len(r) for r in rows}) > 1:
        raise DataError("the texts have different lengths; pass padding=True to make a tensor of them")
    array = np.asarray(rows, dtype=np.int64)
    return torch.from_numpy(array) if return_tensors == "pt" else array


def _special_token(value: Any) -> str | None:
    """A special token from a config: a string, or ``{"content": ...}`` as older files write it."""
    return value.get("content") if isinstance(value, dict) else value


def read_tokenizer_settings(folder: Path) -> dict[str, Any]:
    """Options and special tokens from ``special_tokens_map.json`` then ``tokenizer_config.json`` (which wins)."""
    out: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            raw = read_json(folder / name)
            for key, value in raw.items():
                out[key] = _special_token(value) if key in SPECIAL_TOKEN_NAMES else value
    if out.get("model_max_length") is not None and out["model_max_length"] >= VERY_LARGE:
        out["model_max_length"] = None
    return out
