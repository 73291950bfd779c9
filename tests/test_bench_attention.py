"""The benchmark harness measures in fresh processes and relates each case to its baseline."""

import json

from polyformer.bench.attention import Case, format_table, plot_records, run_bench
from polyformer.bench.measure import time_and_memory
from polyformer.cli import main


def test_run_bench_records_times_memory_and_speedups(tmp_path):
    cases = [
        Case("dense causal", causal=True),
        Case("window", "sliding_window", {"window": 16, "backend": "kernel"}, True, "dense causal"),
    ]
    records = run_bench(cases, [256], ["forward", "forward+backward"], threads=1, repeats=1, progress=False)
    assert len(records) == 4 and all("error" not in r for r in records)
    by = {(r["mechanism"], r["pass"]): r for r in records}
    for p in ("forward", "forward+backward"):
        window, dense = by[("window", p)], by[("dense causal", p)]
        assert window["baseline_ms"] == dense["ms"]
        assert abs(window["speedup"] - dense["ms"] / window["ms"]) < 1e-9
        assert window["peak_mb"] >= 0
    assert "window" in format_table(records)
    assert plot_records(records, tmp_path / "bench.png").stat().st_size > 0


def test_peak_memory_sees_a_large_temporary_allocation():
    import torch

    def step():
        x = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MB, touched
        return int(x[::4096].sum())

    assert time_and_memory(step, repeats=1)["peak_mb"] > 50


def test_failed_case_is_reported_not_raised():
    records = run_bench([Case("bad", "sliding_window", {"window": -1})], [64], ["forward"], threads=1,
                        repeats=1, progress=False)
    assert "window must be a positive integer" in records[0]["error"]


def test_cli_bench_json(capsys):
    assert main(["attention", "bench", "--n", "128", "--only", "global 8", "--pass", "forward",
                 "--threads", "1", "--repeats", "1", "--no-hf", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert {r["mechanism"] for r in lines} == {"global 8", "dense"}
    assert all({"ms", "peak_mb", "n", "pass"} <= set(r) for r in lines)
