"""Byte-level BPE: trained on generated text, saved in GPT-2's formats, loaded both ways, and
encoding exactly like transformers' GPT2TokenizerFast built from the same files."""

import random
import shutil

import pytest
import torch

from polyformer.errors import ConfigError, DataError
from polyformer.processors.text import ENDOFTEXT, TextTokenizer, train_bpe

transformers = pytest.importorskip("transformers")

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "über", "naïve", "café", "日本語", "emoji😀", "tab\tbed",
         "don't", "it's", "123", "4567", "  spaced", "line\nbreak", "x" * 12]
SAMPLES = [
    "Hello world", " leading space", "trailing space ", "double  spaces and\ttabs\n\nnew lines",
    "unicode: über café naïve 日本語 😀 ✓", "numbers 1234567890 and punctuation!?.,;:", "don't it's we'll",
    f"two documents{ENDOFTEXT}joined", "never seen: ξψζ ЖЩ ﷺ", "",
]


def _corpus(n=400, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus")
    corpus = path / "corpus.txt"
    corpus.write_text("\n".join(_corpus()), encoding="utf-8")
    tokenizer = train_bpe([corpus], vocab_size=400, min_frequency=2, progress=False)
    return tokenizer.save_pretrained(path / "tokenizer")


def test_training_learns_merges_and_keeps_every_byte(folder):
    tokenizer = TextTokenizer.from_pretrained(folder)
    assert 256 < tokenizer.vocab_size <= 400
    assert tokenizer.eos_token_id == 0  # special tokens come first
    assert len(tokenizer.encode(" the cat sat on the mat")) < len(" the cat sat on the mat") // 2  # words merged
    for text in SAMPLES:
        assert tokenizer.decode(tokenizer.encode(text)) == text  # lossless, unseen characters included


@pytest.mark.parametrize("source", [("vocab.json", "merges.txt"), ("tokenizer.json",)], ids=["vocab+merges", "tokenizer.json"])
def test_same_ids_as_gpt2_tokenizer_fast(folder, source, tmp_path):
    for name in source:  # a folder holding only these files
        shutil.copy(folder / name, tmp_path / name)
    theirs = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)
    if len(source) == 2:
        ours = TextTokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    else:
        ours = TextTokenizer.from_file(tmp_path / "tokenizer.json")
    for text in SAMPLES + _corpus(20, seed=1):
        ids = ours.encode(text)
        assert ids == theirs(text)["input_ids"], text
        assert ours.decode(ids) == theirs.decode(ids)
    assert ours.encode(ENDOFTEXT) == [theirs.eos_token_id]


def test_transformers_loads_our_folder(folder):
    theirs = transformers.AutoTokenizer.from_pretrained(folder)
    ours = TextTokenizer.from_pretrained(folder)
    for text in SAMPLES:
        assert ours.encode(text) == theirs(text)["input_ids"]


def test_batches_are_left_padded_with_the_eos_token(folder):
    tokenizer = TextTokenizer.from_pretrained(folder)
    batch = tokenizer(["the cat", "the cat sat on the mat today"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    short = tokenizer.encode("the cat")
    assert ids.shape == mask.shape and ids.dtype == torch.long
    assert ids[0, -len(short):].tolist() == short and mask[0, : -len(short)].sum() == 0
    assert (ids[0, : -len(short)] == tokenizer.pad_token_id).all() and mask[1].all()


def test_training_from_texts_equals_training_from_files(folder, tmp_path):
    from_texts = train_bpe(texts=_corpus(), vocab_size=400, progress=False)
    from_files = TextTokenizer.from_pretrained(folder)
    for text in SAMPLES:
        assert from_texts.encode(text) == from_files.encode(text)


def test_bad_input(tmp_path):
    with pytest.raises(DataError, match="no tokenizer found"):
        TextTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(DataError, match="not a valid tokenizer.json"):
        TextTokenizer.from_pretrained(tmp_path)
    with pytest.raises(DataError, match="training files not found"):
        train_bpe([tmp_path / "missing.txt"], progress=False)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="corpus is empty"):
        train_bpe([tmp_path / "empty.txt"], progress=False)
    with pytest.raises(ConfigError, match="vocab_size must be at least 257"):
        train_bpe(texts=["abc"], vocab_size=100, progress=False)
