"""The TimeSformer pipeline benchmark runs (``--quick``: a tiny random model) and compares like with like."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "timesformer_pipeline.py"


def test_quick_benchmark_reports_both_sides_with_equal_scores(capsys):
    spec = importlib.util.spec_from_file_location("timesformer_pipeline_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--threads", "1"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert (record["videos"], record["frames"]) == (2, 4)
    for side in ("polyformer", "transformers"):
        assert record[f"{side}_videos_per_s"] > 0
        # both phases were seen, and together they fit in the fastest call's time
        processor, model = record[f"{side}_processor_s_per_call"], record[f"{side}_model_s_per_call"]
        assert processor > 0 and model > 0
        assert processor + model <= 2 / record[f"{side}_videos_per_s"] * 1.05 + 1e-3
    ratio = record["polyformer_videos_per_s"] / record["transformers_videos_per_s"]
    assert record["ratio_polyformer_vs_transformers"] == pytest.approx(ratio, rel=0.02)
    assert record["max_abs_score_difference"] < 1e-5  # same weights, same frames: the same scores
