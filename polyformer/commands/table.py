"""``polyformer ask-table FILE "question" [more questions] --model DIR``: questions about a CSV or Parquet table."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from polyformer.errors import ConfigError, DataError

_READERS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    ask = subparsers.add_parser("ask-table", help="answer questions about a CSV or Parquet table with a TAPAS folder",
                                description="Answer each question about the table with a table question-answering "
                                "(TAPAS) model folder: the selected cells, the aggregator and, for SUM / AVERAGE / "
                                "COUNT, the computed value.")
    ask.add_argument("table", type=Path, help="the table: a .csv / .tsv file (header row first) or a .parquet file")
    ask.add_argument("questions", nargs="+", help="one or more questions about the table")
    ask.add_argument("--model", type=Path, default=None,
                     help="TAPAS model folder (config.json, weights, vocab.txt and tokenizer_config.json); default: "
                     "the one registered with polyformer models set-default table-question-answering FOLDER")
    ask.add_argument("--sequential", action="store_true",
                     help="read the questions as a conversation: each may refer to the previous answer (SQA models)")
    ask.add_argument("--threshold", type=float, default=0.5,
                     help="select a cell when its probability is above this (default 0.5)")
    ask.add_argument("--batch-size", type=int, default=32, help="questions per forward pass (default 32)")
    ask.add_argument("--json", action="store_true", help="print JSON (one object per question) instead of text")
    ask.set_defaults(func=run_ask_table)


def read_table_file(path: Path) -> Any:
    """A DataFrame from a CSV / TSV (every cell kept as written, as text) or a Parquet file."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"table file {path} does not exist (give a .csv, .tsv or .parquet file)")
    kind = _READERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: cannot tell the table format from the suffix {path.suffix!r}; use .csv, .tsv or "
                        ".parquet")
    try:
        if kind == "parquet":
            table = pd.read_parquet(path)
        else:
            # text as written: "007" stays "007", an empty cell stays empty (not NaN)
            table = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: write a header row and at least one row of cells") from None
    except (ValueError, OSError, pd.errors.ParserError) as error:
        raise DataError(f"cannot read {path} as a {kind} table: {error}") from None
    if table.shape[0] == 0 or table.shape[1] == 0:
        raise DataError(f"{path} has {table.shape[0]} rows and {table.shape[1]} columns: the table is empty; it needs "
                        "a header row and at least one row of cells")
    return table


def run_ask_table(args: argparse.Namespace) -> int:
    """Answer the questions and print them (text or JSON)."""
    from polyformer.pipelines.defaults import RECIPE_FOR_TASK, default_model

    task = "table-question-answering"
    if args.model is None:
        try:
            args.model = default_model(task)
        except ConfigError:
            raise ConfigError(f"ask-table needs --model DIR, a table question-answering (TAPAS) model folder with its "
                              f"tokenizer files, and no default is registered (polyformer never downloads weights): "
                              f"train one with `{RECIPE_FOR_TASK[task]}`, then pass --model runs/table-qa or "
                              f"register it with `polyformer models set-default {task} runs/table-qa`") from None
    if not args.model.is_dir():
        raise DataError(f"model folder {args.model} does not exist")
    table = read_table_file(args.table)
    from polyformer.pipelines import pipeline

    table_qa = pipeline(task, model=args.model, batch_size=args.batch_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = table_qa(table, list(args.questions), sequential=args.sequential,
                           cell_classification_threshold=args.threshold)
    notes = sorted({str(w.message) for w in caught})
    if args.json:
        print(json.dumps([{"question": q, **_plain(a)} for q, a in zip(args.questions, answers)], indent=2))
    else:
        for question, answer in zip(args.questions, answers):
            print(f"Q: {question}")
            print(f"A: {answer['answer'] or '(no cell selected)'}")
            if "value" in answer:
                value = "none (no number among the cells)" if answer["value"] is None else f"{answer['value']:g}"
                print(f"   {answer['aggregator']} = {value}")
                if answer["not_numbers"]:
                    print(f"   not numbers, left out: {', '.join(map(repr, answer['not_numbers']))}")
    for note in notes:  # rows dropped to fit, said once, after the answers
        print(f"note: {note}", file=sys.stderr)
    return 0


def _plain(answer: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready: coordinates as [row, column] lists."""
    return {**answer, "coordinates": [list(cell) for cell in answer["coordinates"]]}
