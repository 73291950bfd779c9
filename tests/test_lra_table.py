"""The LRA table builder on fake records, the cases, and one in-process measurement."""

import json

import pytest
import torch

from polyformer import attention
from polyformer.bench.lra import LRA_RATIOS_4K, LRACase, default_cases, measure_training_step
from polyformer.bench.lra_table import MEMORY_GOAL, build_rows, format_table, plot_rows, summary
from polyformer.errors import ConfigError


def record(label, mechanism, n, ms, peak, bound=None, cpu=None, lra=None, min_ratio=None, min_of_bound=None):
    return {"label": label, "mechanism": mechanism, "options": {}, "n": n, "batch": 8, "threads": 1,
            "lra_model": lra, "lra_ratio_4k": LRA_RATIOS_4K.get(lra), "min_ratio": min_ratio,
            "min_of_bound": min_of_bound, "step_ms": ms, "step_ms_min": ms, "cpu_ms": cpu or ms,
            "runs": 3, "peak_mb": peak, "keys_per_query": 100.0 if bound else None, "flop_bound": bound}


FAKE = [
    record("dense (SDPA)", "dense", 1024, 1000.0, 400.0, 1.0, lra="Transformer"),
    record("local", "sliding_window", 1024, 500.0, 100.0, 2.5, lra="Local Attention", min_of_bound=0.75),
    record("bigbird", "bigbird", 1024, 800.0, 300.0, 2.0, lra="BigBird", min_ratio=2.0),
    record("dense (SDPA)", "dense", 4096, 16000.0, 2000.0, 1.0, cpu=8000.0, lra="Transformer"),
    record("local", "sliding_window", 4096, 4000.0, 200.0, 4.0, cpu=3000.0, lra="Local Attention",
           min_of_bound=0.75) | {"flops_attention": 32e9},
    record("bigbird", "bigbird", 4096, 10000.0, 1500.0, 3.0, cpu=4000.0, lra="BigBird", min_ratio=2.0),
    {"label": "lsh", "mechanism": "lsh", "n": 4096, "error": "timed out after 900 s", "lra_model": "Reformer",
     "lra_ratio_4k": 0.8, "min_ratio": 2.0, "min_of_bound": None},
    record("no attention (floor)", "none", 4096, 3200.0, 150.0),
]


def test_ratios_against_dense_of_the_same_length():
    rows = {(r["label"], r["n"]): r for r in build_rows(FAKE)}
    assert rows["local", 1024]["ratio"] == pytest.approx(2.0)
    assert rows["local", 1024]["of_bound"] == pytest.approx(2.0 / 2.5)
    assert rows["local", 1024]["mem_ratio"] == pytest.approx(0.25)
    assert rows["local", 4096]["ratio"] == pytest.approx(4.0)
    assert rows["local", 4096]["of_bound"] == pytest.approx(1.0)
    assert rows["bigbird", 4096]["ratio"] == pytest.approx(1.6)
    assert rows["no attention (floor)", 4096]["ratio"] == pytest.approx(5.0)
    assert rows["dense (SDPA)", 4096]["ratio"] == 1.0
    assert "ratio" not in rows["lsh", 4096]
    # What attention costs: step time minus the no-attention floor's, and its FLOP rate.
    assert rows["local", 4096]["attention_s"] == pytest.approx(0.8)
    assert rows["local", 4096]["attention_gflops"] == pytest.approx(40.0)
    assert "attention_s" not in rows["local", 1024]  # no floor measured at 1K
    # CPU time as the basis.
    cpu = {(r["label"], r["n"]): r for r in build_rows(FAKE, basis="cpu")}
    assert cpu["bigbird", 4096]["ratio"] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="basis"):
        build_rows(FAKE, basis="flops")


def test_goals_at_the_longest_length():
    rows = {(r["label"], r["n"]): r for r in build_rows(FAKE)}
    assert "goal" not in rows["local", 1024] and "goal" not in rows["dense (SDPA)", 4096]
    assert rows["local", 4096]["met"] is True  # 100% of bound, memory 0.1 of dense
    assert rows["bigbird", 4096]["met"] is False  # 1.6x < 2x, and memory 0.75 > MEMORY_GOAL
    assert rows["bigbird", 4096]["goal"] == "ratio >= 2x (missed), memory <= 50% of dense (missed)"
    assert rows["local", 4096]["goal"].endswith("of bound (met), memory <= 50% of dense (met)")
    assert rows["lsh", 4096]["met"] is None  # not measured
    assert MEMORY_GOAL < 0.75
    result = summary(build_rows(FAKE))
    assert [g["label"] for g in result["goals"]] == ["local", "bigbird", "lsh"]
    assert result["all_met"] is False
    json.dumps(result)
    cpu = {(r["label"], r["n"]): r for r in build_rows(FAKE, basis="cpu")}
    assert cpu["bigbird", 4096]["ratio"] == pytest.approx(2.0) and cpu["bigbird", 4096]["met"] is False  # memory


def test_table_text_has_ratios_bounds_memory_and_the_lra_column():
    text = format_table(build_rows(FAKE))
    assert "5.3x Local Attention" in text and "1.1x BigBird" in text and "0.8x Reformer" in text
    local = [line for line in text.splitlines() if line.startswith("local ")]
    assert "2.00x" in local[0] and "(2.50)" in local[0] and "4.00x" in local[0] and "(4.00)" in local[0]
    assert "0.25" in local[1]  # memory relative to dense at 1K
    assert "100%" in local[2] and "MET" in local[2] and " 0.80 " in local[2] and " 40 " in local[2]
    assert any(line.startswith("lsh") and "timed out" in line for line in text.splitlines())
    assert "At N = 4096" in text


def test_plot_writes_a_png(tmp_path):
    out = plot_rows(build_rows(FAKE), tmp_path / "lra.png")
    assert out.stat().st_size > 1000


def test_default_cases_follow_the_registry():
    cases = default_cases()
    names = {c.mechanism for c in cases}
    assert names <= set(attention.list())
    assert {"dense", "sliding_window", "longformer", "bigbird", "lsh", "linear", "performer"} <= names
    assert ("memory_efficient" in names) == ("memory_efficient" in attention.list())
    assert all(c.options.get("dense_below") == 0 for c in cases if c.mechanism in ("sliding_window", "bigbird"))
    goals = {c.mechanism: (c.min_ratio, c.min_of_bound) for c in cases}
    assert goals["bigbird"] == (2.0, None) and goals["lsh"] == (2.0, None) and goals["linear"] == (None, 0.75)
    assert LRACase("x", "dense", lra_model="Performer").lra_ratio == 5.7


def test_measure_training_step_in_process():
    torch.set_num_threads(1)
    tiny = {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64}
    for mechanism, options in [("sliding_window", {"window": 8, "dense_below": 0}), ("none", {}),
                               ("materialized", {})]:
        result = measure_training_step(mechanism, options, 64, batch=2, model=tiny, warmup=2, steps=2)
        assert result["runs"] == 2 and result["step_ms"] >= result["step_ms_min"] > 0
        assert result["cpu_ms"] > 0 and result["peak_mb"] >= 0 and 0 < result["loss"] < 5


def test_stand_in_rows_compute_what_they_claim():
    from polyformer.bench.lra import STAND_INS

    q, k, v = (torch.randn(1, 2, 6, 4, requires_grad=True) for _ in range(3))
    assert torch.equal(STAND_INS["none"]()(q, k, v), v)
    mask = torch.tensor([[True] * 4 + [False] * 2])
    assert torch.allclose(STAND_INS["materialized"]()(q, k, v, key_padding_mask=mask),
                          attention.build("dense")(q, k, v, key_padding_mask=mask), atol=1e-6)
    out = STAND_INS["none"]()(q, k, v)
    out.sum().backward()
    assert q.grad is not None and k.grad is not None  # projections of q and k still get gradients
