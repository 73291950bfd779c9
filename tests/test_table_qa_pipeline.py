"""pipeline("table-question-answering") against transformers' own pipeline on the same tiny random TAPAS
folders (one with an aggregation head, one without): the same answer, coordinates, cells and
aggregator, in batch and in sequential (SQA) mode; and the values of aggregated answers against
hand computations."""

import warnings

import pandas as pd
import pytest
from _tapas_folder import BOOK, QUERIES, save_tiny_tapas

from polyformer import pipeline
from polyformer.errors import ConfigError, DataError
from polyformer.pipelines.table_answers import aggregate_value, cell_number, cell_text, text_table
from polyformer.pipelines.table_question_answering import TableQuestionAnsweringPipeline

transformers = pytest.importorskip("transformers")
TASK = "table-question-answering"
VALUE_KEYS = {"value", "value_cells", "not_numbers"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tapas")
    # seeds whose random heads select some cells and (with aggregation) mix COUNT and SUM
    return {"aggregation": save_tiny_tapas(root / "wtq", aggregation=True, seed=0),
            "plain": save_tiny_tapas(root / "sqa", aggregation=False, seed=1)}


@pytest.fixture(scope="module")
def pipes(folders):
    transformers.logging.set_verbosity_error()
    return {name: (pipeline(TASK, model=folder), transformers.pipeline(TASK, model=str(folder)))
            for name, folder in folders.items()}


def assert_same(ours, theirs):
    """transformers' fields equal; ours adds the value fields, on SUM/AVERAGE/COUNT answers only."""
    assert {k: ours[k] for k in theirs} == theirs
    extra = set(ours) - set(theirs)
    assert extra == (VALUE_KEYS if theirs.get("aggregator") in ("SUM", "AVERAGE", "COUNT") else set())


@pytest.mark.parametrize("name", ["aggregation", "plain"])
@pytest.mark.parametrize("sequential", [False, True])
def test_answers_match_transformers(pipes, name, sequential):
    ours, theirs = pipes[name]
    mine, reference = ours(BOOK, QUERIES, sequential=sequential), theirs(pd.DataFrame(BOOK), QUERIES,
                                                                        sequential=sequential)
    assert len(mine) == len(reference) == len(QUERIES)
    for a, b in zip(mine, reference):
        assert_same(a, b)
    assert any(r["cells"] for r in reference)  # the comparison covers selected cells, not only empty answers
    if name == "aggregation":
        assert {r["aggregator"] for r in reference} >= {"SUM", "COUNT"}
        assert all(r["answer"].startswith(r["aggregator"] + " > ") for r in mine)  # no no_aggregation_label_index


def test_sequential_reads_the_previous_answer(pipes):
    ours, theirs = pipes["aggregation"]
    batch, conversation = ours(BOOK, QUERIES), ours(BOOK, QUERIES, sequential=True)
    assert batch[0] == conversation[0]  # the first question has no previous answer
    assert [a["coordinates"] for a in batch] != [a["coordinates"] for a in conversation]
    # padding=False runs each question alone: the conversation carries over
    alone = ours(BOOK, QUERIES, sequential=True, padding=False)
    assert [a["coordinates"] for a in alone] == [a["coordinates"] for a in conversation]


def test_input_forms(pipes):
    ours, theirs = pipes["aggregation"]
    table = pd.DataFrame(BOOK)
    one = theirs(table, QUERIES[1])
    assert_same(ours(table, QUERIES[1]), one)
    assert_same(ours(table=BOOK, query=QUERIES[1]), one)
    assert_same(ours({"table": BOOK, "query": QUERIES[1]}), one)
    # a list gives a list, even of one question (transformers returns a bare dict then)
    [listed] = ours(table, [QUERIES[1]])
    assert_same(listed, one)
    both = ours([{"table": table, "query": QUERIES[1]}, {"table": BOOK, "query": QUERIES[:2]}])
    assert isinstance(both[0], dict) and len(both[1]) == 2
    assert_same(both[0], one)
    assert_same(both[1][1], one)
    # batches of one question, each cut to its own length, give the same answers
    assert ours(table, QUERIES, batch_size=1) == ours(table, QUERIES)


def test_rows_dropped_to_fit_match_transformers(pipes):
    ours, theirs = pipes["aggregation"]
    table = {"city": [f"city number {i}" for i in range(200)], "people": [str(1000 + 37 * i) for i in range(200)],
             "river": ["none" if i % 3 else "a river" for i in range(200)]}
    question = "Which city has the most people?"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine = ours(table, [question, "Where is a river?"])
    reference = theirs(pd.DataFrame(table), [question, "Where is a river?"])
    for a, b in zip(mine, reference):
        assert_same(a, b)
    assert any(r["cells"] for r in reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert min(ours.tokenizer(text_table(table), [question], truncation=True).rows_dropped) > 0


def test_numeric_cells_read_as_their_text(pipes):
    ours, theirs = pipes["aggregation"]
    numbers = {"chapter": list(range(8)), "name": BOOK["name"], "start_page": [int(x) for x in BOOK["start_page"]],
               "end_page": [float(x) for x in BOOK["end_page"]], "number_of_pages": [int(x) for x in
                                                                                     BOOK["number_of_pages"]]}
    reference = theirs(pd.DataFrame(BOOK), QUERIES)  # transformers needs strings: it gets the text table
    for a, b in zip(ours(pd.DataFrame(numbers), QUERIES), reference):
        assert_same(a, b)


def test_cell_text():
    assert [cell_text(v) for v in ["07", 3, 3.0, 2.5, float("nan"), None, True, pd.Timestamp("2020-01-02")]] == [
        "07", "3", "3", "2.5", "", "", "True", "2020-01-02"]
    frame = text_table(pd.DataFrame({"a": [1.0, None], "b": ["x", "y"]}, index=[5, 9]))
    assert frame.values.tolist() == [["1", "x"], ["", "y"]]


def test_values_match_a_hand_computation():
    cells = ["3rd", "1,234.5", "36 pages", "March 2007", "", "seven", "n/a"]
    assert [cell_number(c) for c in cells] == [3.0, 1234.5, 36.0, None, None, 7.0, None]
    numbers = [3.0, 1234.5, 36.0, 7.0]
    total = aggregate_value("SUM", cells)
    assert total == {"value": sum(numbers), "value_cells": ["3rd", "1,234.5", "36 pages", "seven"],
                     "not_numbers": ["March 2007", "", "n/a"]}
    assert aggregate_value("AVERAGE", cells)["value"] == pytest.approx(sum(numbers) / 4)
    assert aggregate_value("COUNT", cells)["value"] == 7.0
    assert aggregate_value("SUM", ["words"])["value"] is None
    assert aggregate_value("AVERAGE", [])["value"] is None and aggregate_value("SUM", [])["value"] == 0.0


@pytest.mark.parametrize("index,expected", [(1, 1243.0), (2, 1243.0 / 3), (3, 4.0)])
def test_aggregated_answers_carry_their_value(tmp_path, index, expected):
    # every cell selected (a large cell bias) and the aggregation forced: the value is the column's
    folder = save_tiny_tapas(tmp_path / "forced", force_aggregation=index, cell_bias=50.0)
    answer = pipeline(TASK, model=folder)({"pages": ["1,200", "36", "n/a", 7]}, "How many pages in all?")
    assert answer["cells"] == ["1,200", "36", "n/a", "7"]
    assert answer["aggregator"] == ["NONE", "SUM", "AVERAGE", "COUNT"][index]
    assert answer["value"] == pytest.approx(expected)
    assert answer["not_numbers"] == ([] if index == 3 else ["n/a"])


def test_bad_input_raises_named_errors(pipes, folders):
    ours, _ = pipes["aggregation"]
    with pytest.raises(DataError, match="empty"):
        ours(pd.DataFrame({"a": []}), "question?")
    with pytest.raises(DataError, match="duplicate"):
        ours(pd.DataFrame([["1", "2"]], columns=["a", "a"]), "question?")
    with pytest.raises(DataError, match="column names must be strings"):
        ours(pd.DataFrame([["1", "2"]]), "question?")
    for query in ("", "  ", [], ["fine", ""], 3):
        with pytest.raises(DataError):
            ours(BOOK, query)
    with pytest.raises(DataError, match="needs a table and a query"):
        ours(BOOK)
    for option in ({"sequential": "yes"}, {"padding": "sideways"}, {"truncation": 3}, {"batch_size": 0},
                   {"cell_classification_threshold": 1.5}):
        with pytest.raises(ConfigError):
            ours(BOOK, "question?", **option)
    bert = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))
    with pytest.raises(ConfigError, match="TAPAS"):
        TableQuestionAnsweringPipeline(bert, ours.tokenizer)
