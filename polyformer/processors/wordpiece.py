"""BERT's WordPiece tokenizer on Hugging Face's ``tokenizers`` library.

The pipeline is the library's own parts: ``BertNormalizer`` (clean control characters, put spaces
around CJK characters, lower-case, strip accents), ``BertPreTokenizer`` (split on whitespace and
punctuation), the ``WordPiece`` model (greedy longest-match pieces, ``##`` marks a piece inside a
word, ``[UNK]`` for a word it cannot cover), a ``[CLS] A [SEP] B [SEP]`` template with token
types 0 / 1, and the ``WordPiece`` decoder.

A folder is read from ``tokenizer.json`` when it has one, else from ``vocab.txt`` +
``tokenizer_config.json`` (``do_lower_case``, ``strip_accents``, ``tokenize_chinese_chars``,
special tokens); :meth:`WordPieceTokenizer.save_pretrained` writes all four files Hugging Face
writes, so ``transformers.AutoTokenizer`` loads the folder too.

    tokenizer = WordPieceTokenizer.from_pretrained("bert-folder")
    batch = tokenizer(["a question", "another"], ["its context", "..."], padding=True,
                      truncation="only_second", max_length=128, return_tensors="pt")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from polyformer.errors import ConfigError, DataError
from polyformer.processors.base import missing_files_error, register_processor, write_json_files
from polyformer.processors.tokenizer import SPECIAL_TOKEN_NAMES, TokenizerBase, read_tokenizer_settings

__all__ = ["BERT_SPECIAL_TOKENS", "WordPieceTokenizer", "read_vocab"]

BERT_SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                       "mask_token": "[MASK]"}


def read_vocab(path: str | Path) -> dict[str, int]:
    """``vocab.txt``: one token a line, its id the line number (a repeated token keeps its last line)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; a vocab.txt holds one token per line") from None
    if not lines:
        raise DataError(f"{path} is empty; a vocab.txt holds one token per line")
    return {line.rstrip("\n"): index for index, line in enumerate(lines)}


class WordPieceTokenizer(TokenizerBase):
    """``BertTokenizer`` / ``BertTokenizerFast``: same files, same ids, same offsets.

    ``strip_accents`` None follows ``do_lower_case`` (as original BERT does); words longer than
    ``max_input_chars_per_word`` characters become the unknown token.
    """

    hf_class = "BertTokenizer"

    def __init__(self, vocab: dict[str, int], *, do_lower_case: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True, max_input_chars_per_word: int = 100,
                 model_max_length: int | None = None, padding_side: str = "right", truncation_side: str = "right",
                 **special_tokens: str | None) -> None:
        from tokenizers import Tokenizer, models

        if not isinstance(vocab, dict) or not vocab:
            raise ConfigError("vocab must be a non-empty dict token -> id")
        specials = {**BERT_SPECIAL_TOKENS, **special_tokens}
        if specials.get("unk_token") is None or specials["unk_token"] not in vocab:
            raise ConfigError(f"the unknown token {specials.get('unk_token')!r} must be in the vocabulary")
        tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=specials["unk_token"],
                                               max_input_chars_per_word=max_input_chars_per_word))
        self._set_pipeline(tokenizer, do_lower_case, strip_accents, tokenize_chinese_chars, specials, vocab)
        super().__init__(tokenizer, specials, model_max_length=model_max_length, padding_side=padding_side,
                         truncation_side=truncation_side)

    @staticmethod
    def _set_pipeline(tokenizer: Any, lower: bool, strip: bool | None, chinese: bool, specials: dict[str, Any],
                      vocab: dict[str, int]) -> None:
        from tokenizers import decoders, normalizers, pre_tokenizers, processors

        tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=chinese,
                                                          strip_accents=strip, lowercase=lower)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        cls, sep = specials.get("cls_token"), specials.get("sep_token")
        if cls is None or sep is None or cls not in vocab or sep not in vocab:
            raise ConfigError(f"cls_token {cls!r} and sep_token {sep!r} must both be in the vocabulary "
                              "(BERT's inputs are [CLS] A [SEP] B [SEP])")
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])

    @classmethod
    def _wrap(cls, tokenizer: Any, settings: dict[str, Any]) -> "WordPieceTokenizer":
        """An instance around a ready ``tokenizers.Tokenizer`` (read from a tokenizer.json)."""
        self = cls.__new__(cls)
        specials = {k: settings[k] for k in SPECIAL_TOKEN_NAMES if k in settings}
        TokenizerBase.__init__(self, tokenizer, {**BERT_SPECIAL_TOKENS, **specials},
                               model_max_length=settings.get("model_max_length"),
                               padding_side=settings.get("padding_side", "right"),
                               truncation_side=settings.get("truncation_side", "right"))
        return self

    # -- the options, read back from the tokenizer itself (whichever file it came from) ---------------
    def _normalizer(self) -> dict[str, Any]:
        state = json.loads(self.tokenizer.to_str()).get("normalizer") or {}
        return state if state.get("type") == "BertNormalizer" else {}

    @property
    def do_lower_case(self) -> bool:
        """Whether text is lower-cased."""
        return bool(self._normalizer().get("lowercase", False))

    @property
    def strip_accents(self) -> bool | None:
        """Whether accents are removed (None: when lower-casing)."""
        return self._normalizer().get("strip_accents")

    @property
    def tokenize_chinese_chars(self) -> bool:
        """Whether each CJK character is a word of its own."""
        return bool(self._normalizer().get("handle_chinese_chars", True))

    # -- files --------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, **overrides: Any) -> "WordPieceTokenizer":
        """Read ``tokenizer.json``, else ``vocab.txt`` with ``tokenizer_config.json`` (and ``special_tokens_map.json``)."""
        from tokenizers import Tokenizer

        folder = Path(folder)
        settings = read_tokenizer_settings(folder)
        settings.update(overrides)
        if (folder / "tokenizer.json").is_file():
            path = folder / "tokenizer.json"
            try:
                tokenizer = Tokenizer.from_file(str(path))
            except Exception as error:  # the Rust side raises plain Exceptions with its message
                raise DataError(f"{path} is not a valid tokenizer.json ({error})") from None
            kind = type(tokenizer.model).__name__
            if kind != "WordPiece":
                raise ConfigError(f"{path} holds a {kind} model, not WordPiece; load it with AutoTokenizer")
            return cls._wrap(tokenizer, settings)
        if (folder / "vocab.txt").is_file():
            options = {k: settings[k] for k in ("do_lower_case", "strip_accents", "tokenize_chinese_chars",
                                                "max_input_chars_per_word", "model_max_length", "padding_side",
                                                "truncation_side", *SPECIAL_TOKEN_NAMES) if k in settings}
            return cls(read_vocab(folder / "vocab.txt"), **options)
        raise missing_files_error(folder, "tokenizer.json or vocab.txt", "tokenizer.save_pretrained(folder)")

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``tokenizer.json``, ``vocab.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        by_id = sorted(vocab.items(), key=lambda item: item[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise ConfigError("the vocabulary's ids are not 0..N-1 without gaps, so it cannot be written as vocab.txt")
        config = {"tokenizer_class": self.hf_class, "do_lower_case": self.do_lower_case,
                  "strip_accents": self.strip_accents, "tokenize_chinese_chars": self.tokenize_chinese_chars,
                  **self.special_tokens, "model_max_length": self.model_max_length,
                  "padding_side": self.padding_side, "truncation_side": self.truncation_side,
                  "clean_up_tokenization_spaces": True}
        text = self.tokenizer.to_str(pretty=True)
        vocab_text = "".join(token + "\n" for token, _ in by_id)
        return write_json_files(folder, {"tokenizer_config.json": config, "special_tokens_map.json": self.special_tokens},
                                writers={"tokenizer.json": lambda p: p.write_text(text, encoding="utf-8"),
                                         "vocab.txt": lambda p: p.write_text(vocab_text, encoding="utf-8")})


register_processor("tokenizer", WordPieceTokenizer, names=["BertTokenizer"], model_types=["bert"])
