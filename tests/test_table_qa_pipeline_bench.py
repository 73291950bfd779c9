"""The table-QA pipeline benchmark runs (``--quick``: a tiny random TAPAS) and reports every field."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tapas_pipeline.py"


def test_quick_benchmark_reports_both_sides(capsys):
    spec = importlib.util.spec_from_file_location("tapas_pipeline_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--threads", "1"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert (record["rows"], record["questions"], record["columns"]) == (10, 4, 5)
    for side in ("polyformer", "transformers"):
        assert record[f"{side}_questions_per_s"] > 0
        tokenizer, model = record[f"{side}_tokenizer_s_per_call"], record[f"{side}_model_s_per_call"]
        assert tokenizer > 0 and model > 0
        # the phases fit in the fastest call's time
        assert tokenizer + model <= 4 / record[f"{side}_questions_per_s"] * 1.05 + 1e-3
    ratio = record["polyformer_questions_per_s"] / record["transformers_questions_per_s"]
    assert record["ratio_polyformer_vs_transformers"] == pytest.approx(ratio, rel=0.02)
    assert record["answers_agreeing"] == 4  # the same folder gives the same answers on both sides
    assert record["tokens_per_question"] > 0 and record["rows_dropped"] == 0
