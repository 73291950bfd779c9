"""The text pipeline benchmark runs (``--quick``: a tiny random BERT) and compares like with like."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bert_pipeline.py"


def test_quick_benchmark_reports_both_sides_with_equal_outputs(capsys):
    spec = importlib.util.spec_from_file_location("bert_pipeline_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--threads", "1"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    seen = {(r["task"], r["output"], r["batch_size"]) for r in records}
    assert seen == {(task, output, b) for b in (1, 8) for task, output in
                    [("feature-extraction", "lists"), ("feature-extraction", "tensors"), ("text-classification", "scores")]}
    for r in records:
        assert r["sentences"] == 16 and r["polyformer_sentences_per_s"] > 0 and r["transformers_sentences_per_s"] > 0
        assert r["ratio"] == pytest.approx(r["polyformer_sentences_per_s"] / r["transformers_sentences_per_s"], rel=0.02)
        assert r["max_abs_difference"] < 1e-4  # the same folder gives the same numbers on both sides
