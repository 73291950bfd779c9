"""Corpus preparation: split, tokenizer, token files that decode back to the text, bad input."""

import json

import numpy as np
import pytest

from polyformer.cli import main
from polyformer.data import Document, PrepareOptions, load_corpus, open_dataset, prepare_corpus
from polyformer.data.prepare import split_document
from polyformer.data.tokenizer import load_tokenizer
from polyformer.errors import ConfigError, DataError

TEXTS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 20,
    "O Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name.\n" * 25,
    "Of Mans First Disobedience, and the Fruit\nOf that Forbidden Tree, whose mortal tast\n" * 15,
]


def _documents():
    return [Document(f"doc{i}.txt", t) for i, t in enumerate(TEXTS)]


def _split_on(ids, separator):
    parts, current = [], []
    for token in ids:
        if token == separator:
            parts.append(current)
            current = []
        else:
            current.append(int(token))
    assert current == []  # the stream ends with a separator
    return parts


def test_split_cuts_after_a_line_break():
    text = "line one\nline two\nline three\nline four\n"
    train, val = split_document(text, 0.3)
    assert train + val == text
    assert train.endswith("\n") and val == "line four\n"
    assert split_document("a corpus on one line!", 0.2) == ("a corpus on one ", "line!")  # cut at the character


def test_token_files_decode_back_to_the_split_texts(tmp_path):
    dataset = prepare_corpus(_documents(), tmp_path, PrepareOptions(vocab_size=300, val_fraction=0.1), corpus="toy")
    tokenizer = load_tokenizer(dataset.tokenizer_path)
    eot = dataset.info["end_of_text_id"]
    assert eot is not None and dataset.vocab_size == tokenizer.get_vocab_size() <= 300
    for split, index in (("train", 0), ("val", 1)):
        tokens = dataset.train.tokens if split == "train" else dataset.val.tokens
        decoded = [tokenizer.decode(ids) for ids in _split_on(np.asarray(tokens), eot)]
        expected = [split_document(t, 0.1)[index] for t in TEXTS]
        assert decoded == expected
    assert dataset.train.tokens.dtype == np.uint16
    assert json.loads((tmp_path / "dataset.json").read_text())["tokens"] == {
        "train": len(dataset.train), "val": len(dataset.val)}
    # BPE merges shorten the text: fewer tokens than bytes
    assert len(dataset.train) < 0.6 * sum(len(split_document(t, 0.1)[0]) for t in TEXTS)


def test_a_given_tokenizer_is_used_as_is(tmp_path):
    first = prepare_corpus(_documents(), tmp_path / "a", PrepareOptions(vocab_size=280))
    second = prepare_corpus(_documents(), tmp_path / "b",
                            PrepareOptions(tokenizer=str(first.tokenizer_path), vocab_size=5000))
    np.testing.assert_array_equal(np.asarray(first.train.tokens), np.asarray(second.train.tokens))
    assert second.vocab_size == first.vocab_size


@pytest.mark.parametrize("documents", [[], [Document("a", "")], [Document("a", "  \n\t\n")]])
def test_empty_corpus_is_a_clear_error(tmp_path, documents):
    with pytest.raises(DataError, match="is empty"):
        prepare_corpus(documents, tmp_path)
    assert not (tmp_path / "train.bin").exists()


def test_options_are_checked():
    with pytest.raises(ConfigError, match="val_fraction"):
        PrepareOptions(val_fraction=0.0)
    with pytest.raises(ConfigError, match="vocab_size"):
        PrepareOptions(vocab_size=100)


def test_cli_prepares_a_folder_and_refuses_an_empty_one(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(TEXTS):
        (corpus / f"{i}.txt").write_text(text)
    assert main(["data", "prepare", "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--vocab-size", "300"]) == 0
    assert "3 documents" in capsys.readouterr().out
    assert len(open_dataset(tmp_path / "out").val) > 0
    assert main(["data", "show", str(tmp_path / "out")]) == 0

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("\n\n")
    assert main(["data", "prepare", "--corpus", str(empty), "--out", str(tmp_path / "out2")]) == 2
    assert "is empty" in capsys.readouterr().err


def test_pydoc_corpus_prepares(tmp_path):
    dataset = prepare_corpus(load_corpus("pydoc")[:10], tmp_path, PrepareOptions(vocab_size=400), corpus="pydoc")
    assert len(dataset.train) > 10 * len(dataset.val) > 0
