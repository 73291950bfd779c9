"""Token files: a flat array of token ids on disk, read through a memory map.

A token file ``NAME.bin`` holds the ids back to back (``uint16`` when the vocabulary has fewer
than 65,536 entries, else ``uint32``); the sidecar ``NAME.json`` records the dtype, the count,
the vocabulary size and the tokenizer that produced them. Reading maps the file instead of
loading it, so a corpus larger than memory trains as easily as a small one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polyformer.files import atomic_write_bytes
from polyformer.errors import DataError

FORMAT = "polyformer-tokens"
FORMAT_VERSION = 1
_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id of a vocabulary of ``vocab_size``."""
    if vocab_size < 1:
        raise DataError(f"vocab_size must be at least 1, got {vocab_size}")
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def sidecar_path(path: Path) -> Path:
    """``train.bin`` -> ``train.json``."""
    return Path(path).with_suffix(".json")


@dataclass
class TokenFile:
    """An opened token file: ``tokens`` is a read-only memory map of shape ``(n_tokens,)``."""

    path: Path
    tokens: np.ndarray
    vocab_size: int
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def write_tokens(path: str | Path, ids: np.ndarray, vocab_size: int, **info: Any) -> Path:
    """Write ``ids`` (1-D integers in ``[0, vocab_size)``) and the sidecar, each atomically.

    ``info`` (tokenizer name, corpus, split...) is stored in the sidecar as given.
    """
    path = Path(path)
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise DataError(f"token ids must be one flat array, got shape {ids.shape}")
    if ids.size == 0:
        raise DataError(f"no tokens to write to {str(path)!r}: the text is empty")
    if not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"token ids must be integers, got dtype {ids.dtype}")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise DataError(f"token ids must lie in [0, {vocab_size}) (vocab_size), found ids in [{low}, {high}]")
    dtype = token_dtype(vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, ids.astype(dtype, copy=False).tobytes())
    sidecar = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dtype": dtype.name,
        "n_tokens": int(ids.size),
        "vocab_size": int(vocab_size),
        **info,
    }
    atomic_write_bytes(sidecar_path(path), (json.dumps(sidecar, indent=1, sort_keys=True) + "\n").encode())
    return path


def open_tokens(path: str | Path) -> TokenFile:
    """Memory-map a token file after checking its sidecar and its size."""
    path = Path(path)
    meta_path = sidecar_path(path)
    if not path.is_file():
        raise DataError(f"token file {str(path)!r} does not exist; create it with `polyformer data prepare`")
    if not meta_path.is_file():
        raise DataError(f"token file {str(path)!r} has no sidecar {meta_path.name}; re-create it with `polyformer data prepare`")
    try:
        info = json.loads(meta_path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"sidecar {str(meta_path)!r} is not valid JSON ({error}); re-create the token file") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(f"{str(meta_path)!r} is not a polyformer token-file sidecar (format {FORMAT!r} expected)")
    dtype_name = info.get("dtype")
    if dtype_name not in _DTYPES:
        raise DataError(f"{str(meta_path)!r}: dtype must be one of {sorted(_DTYPES)}, got {dtype_name!r}")
    dtype = np.dtype(_DTYPES[dtype_name])
    n_tokens = int(info.get("n_tokens", -1))
    vocab_size = int(info.get("vocab_size", 0))
    if n_tokens <= 0 or vocab_size <= 0:
        raise DataError(f"{str(meta_path)!r}: n_tokens and vocab_size must be positive, got {n_tokens} and {vocab_size}")
    expected = n_tokens * dtype.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise DataError(
            f"token file {str(path)!r} has {actual} bytes but its sidecar promises {n_tokens} {dtype.name} tokens "
            f"({expected} bytes): the file is truncated or was overwritten; re-create it with `polyformer data prepare`"
        )
    tokens = np.memmap(path, dtype=dtype, mode="r", shape=(n_tokens,))
    return TokenFile(path=path, tokens=tokens, vocab_size=vocab_size, info=info)

