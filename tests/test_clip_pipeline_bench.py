"""The zero-shot pipeline benchmark runs (``--quick``: a tiny random CLIP) and compares like with like."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "clip_pipeline.py"
SIDES = ("polyformer", "polyformer_cold", "transformers", "transformers_batched")


def test_quick_benchmark_reports_every_side_with_equal_scores(capsys):
    spec = importlib.util.spec_from_file_location("clip_pipeline_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--threads", "1"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert (record["images"], record["labels"]) == (4, 8)
    for side in SIDES:
        assert record[f"{side}_images_per_s"] > 0
        # both phases were seen on every side, and together they fit in the fastest call's time
        processor, model = record[f"{side}_processor_s_per_call"], record[f"{side}_model_s_per_call"]
        assert processor > 0 and model > 0
        assert processor + model <= 4 / record[f"{side}_images_per_s"] * 1.05 + 1e-3
    ratio = record["polyformer_images_per_s"] / record["transformers_images_per_s"]
    assert record["ratio_polyformer_vs_transformers"] == pytest.approx(ratio, rel=0.02)
    assert record["max_abs_score_difference"] < 1e-5  # the same folder gives the same scores on every side
