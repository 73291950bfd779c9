"""``polyformer ask-table`` end to end on a tiny random TAPAS folder: the answers are the pipeline's
(checked against transformers' pipeline on the same folder), from CSV and Parquet, and bad input
gives a named error and exit status 2."""

import json

import pandas as pd
import pytest
from _tapas_folder import BOOK, QUERIES, save_tiny_tapas

from polyformer.cli import main

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_tapas(tmp_path_factory.mktemp("tapas") / "wtq", aggregation=True, seed=0)


@pytest.fixture(scope="module")
def reference(folder):
    transformers.logging.set_verbosity_error()
    return transformers.pipeline("table-question-answering", model=str(folder))(pd.DataFrame(BOOK), QUERIES)


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_csv_answers_as_json_match_transformers(tmp_path, capsys, folder, reference):
    path = tmp_path / "book.csv"
    pd.DataFrame(BOOK).to_csv(path, index=False)
    status, out, _ = run(capsys, "ask-table", path, *QUERIES, "--model", folder, "--json")
    assert status == 0
    answers = json.loads(out)
    assert [a["question"] for a in answers] == QUERIES
    for mine, theirs in zip(answers, reference):
        assert [tuple(c) for c in mine["coordinates"]] == theirs["coordinates"]
        assert (mine["answer"], mine["cells"], mine["aggregator"]) == (theirs["answer"], theirs["cells"],
                                                                       theirs["aggregator"])
        if theirs["aggregator"] == "SUM":  # the book's numbers are plain digits; its names hold none
            numbers = [float(c) for c in theirs["cells"] if c.isdigit()]
            assert mine["value"] == (sum(numbers) if numbers else None)
            assert mine["not_numbers"] == [c for c in theirs["cells"] if not c.isdigit()]


def test_parquet_with_numeric_columns_prints_text(tmp_path, capsys, folder, reference):
    table = pd.DataFrame(BOOK)
    for column in ("chapter", "start_page", "end_page", "number_of_pages"):
        table[column] = table[column].astype(int)
    path = tmp_path / "book.parquet"
    table.to_parquet(path)
    status, out, _ = run(capsys, "ask-table", path, *QUERIES, "--model", folder)
    assert status == 0
    lines = out.splitlines()
    assert [line[3:] for line in lines if line.startswith("Q: ")] == QUERIES
    assert [line[3:] for line in lines if line.startswith("A: ")] == [r["answer"] or "(no cell selected)"
                                                                     for r in reference]
    sums = [r for r in reference if r["aggregator"] == "SUM"]
    assert sum(line.strip().startswith("SUM = ") for line in lines) == len(sums) > 0


def test_without_model_the_registered_default_answers(tmp_path, capsys, folder, monkeypatch):
    from polyformer.pipelines.defaults import set_default_model

    monkeypatch.setenv("POLYFORMER_MODELS", str(tmp_path / "models"))
    csv = tmp_path / "t.csv"
    pd.DataFrame(BOOK).to_csv(csv, index=False)
    status, _, err = run(capsys, "ask-table", csv, "what?")
    assert status == 2 and "needs --model" in err and "polyformer train table-qa" in err
    set_default_model("table-question-answering", folder)
    assert run(capsys, "ask-table", csv, *QUERIES, "--json")[:2] == run(capsys, "ask-table", csv, *QUERIES, "--json",
                                                                        "--model", folder)[:2]


def test_bad_input_is_a_named_error(tmp_path, capsys, folder):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,2\n")
    status, _, err = run(capsys, "ask-table", tmp_path / "missing.csv", "what?", "--model", folder)
    assert status == 2 and "does not exist" in err
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    status, _, err = run(capsys, "ask-table", empty, "what?", "--model", folder)
    assert status == 2 and "empty" in err
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b\n")
    status, _, err = run(capsys, "ask-table", header_only, "what?", "--model", folder)
    assert status == 2 and "empty" in err
    status, _, err = run(capsys, "ask-table", tmp_path / "t.xlsx", "what?", "--model", folder)
    assert status == 2 and "does not exist" in err
    (tmp_path / "t.xlsx").write_bytes(b"x")
    status, _, err = run(capsys, "ask-table", tmp_path / "t.xlsx", "what?", "--model", folder)
    assert status == 2 and ".csv" in err
    status, _, err = run(capsys, "ask-table", csv, "  ", "--model", folder)
    assert status == 2 and "empty" in err
