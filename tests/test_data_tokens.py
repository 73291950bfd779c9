"""Memory-mapped token files: round trips, dtype choice, and refusals of bad files."""

import json

import numpy as np
import pytest

from polyformer.data.tokens import open_tokens, sidecar_path, token_dtype, write_tokens
from polyformer.errors import DataError


@pytest.mark.parametrize("vocab, dtype", [(2, np.uint16), (65536, np.uint16), (65537, np.uint32), (100_000, np.uint32)])
def test_dtype_is_the_smallest_that_holds_the_vocabulary(vocab, dtype):
    assert token_dtype(vocab) == np.dtype(dtype)


@pytest.mark.parametrize("vocab", [300, 70_000])
def test_round_trip_through_the_memory_map(tmp_path, vocab):
    ids = np.random.default_rng(0).integers(0, vocab, size=1000)
    ids[0] = vocab - 1  # the largest id must survive the narrow dtype
    write_tokens(tmp_path / "train.bin", ids, vocab, split="train")
    opened = open_tokens(tmp_path / "train.bin")
    assert isinstance(opened.tokens, np.memmap) and not opened.tokens.flags.writeable
    assert opened.tokens.dtype == token_dtype(vocab)
    np.testing.assert_array_equal(np.asarray(opened.tokens, dtype=np.int64), ids)
    assert len(opened) == 1000 and opened.vocab_size == vocab and opened.info["split"] == "train"
    assert (tmp_path / "train.bin").stat().st_size == 1000 * token_dtype(vocab).itemsize


def test_truncated_file_is_refused_with_the_fix(tmp_path):
    path = write_tokens(tmp_path / "val.bin", np.arange(100), 128)
    with open(path, "r+b") as handle:
        handle.truncate(150)
    with pytest.raises(DataError, match="truncated.*polyformer data prepare"):
        open_tokens(path)


def test_missing_or_foreign_sidecar_is_refused(tmp_path):
    path = write_tokens(tmp_path / "a.bin", np.arange(10), 16)
    sidecar_path(path).write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not a polyformer token-file sidecar"):
        open_tokens(path)
    sidecar_path(path).unlink()
    with pytest.raises(DataError, match="no sidecar"):
        open_tokens(path)
    with pytest.raises(DataError, match="does not exist"):
        open_tokens(tmp_path / "missing.bin")


@pytest.mark.parametrize("ids, message", [
    (np.array([], dtype=np.int64), "empty"),
    (np.array([0, 5, 16]), r"\[0, 16\)"),
    (np.array([-1, 2]), r"\[0, 16\)"),
    (np.zeros((2, 3), dtype=np.int64), "flat"),
    (np.array([0.5, 1.0]), "integers"),
])
def test_bad_ids_are_refused(tmp_path, ids, message):
    with pytest.raises(DataError, match=message):
        write_tokens(tmp_path / "x.bin", ids, 16)
    assert not (tmp_path / "x.bin").exists()
