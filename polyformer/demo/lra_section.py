"""Demo section: Long Range Arena's efficiency table for the byte-level classifier.

Quick mode shows the FLOP-bound ratios (arithmetic only, no measurement); the full mode trains
the classifier two steps at 1K and 2K with a subset of mechanisms (a couple of minutes on one
core).
"""

from __future__ import annotations

from polyformer.bench.lra import BATCH, LENGTHS, LRA_RATIOS_4K, MODEL, case_flops, default_cases, run_lra
from polyformer.bench.lra_table import build_rows, format_table, plot_rows
from polyformer.demo.report import Report

#: Mechanisms the full demo measures (the complete table: benchmarks/lra_efficiency.py).
DEMO_MECHANISMS = ("dense", "sliding_window", "bigbird", "lsh", "linear")
DEMO_LENGTHS = (1024, 2048)


def add_section(report: Report, quick: bool) -> None:
    section = report.section("Long Range Arena efficiency table (byte-level classifier)")
    section.text(
        f"A byte-level text classifier on the transformer core ({MODEL['n_layers']} layers, width "
        f"{MODEL['d_model']}, {MODEL['n_heads']} heads, MLP {MODEL['d_ff']}, CLS pooling; Long Range "
        f"Arena's text model) trained on batches of {BATCH} sequences with each attention mechanism. "
        "Dense is PyTorch's fused scaled_dot_product_attention, so the best possible speed-up of a "
        "mechanism is bounded by the FLOPs outside attention (projections, MLP, head): the FLOP-bound "
        "ratio = training FLOPs of a dense step / training FLOPs of the mechanism's step."
    )
    cases = default_cases()
    rows = []
    for case in cases:
        bounds = [case_flops(case, n) for n in LENGTHS]
        kpq = bounds[-1]["keys_per_query"]
        lra = f"{case.lra_ratio:.1f}x ({case.lra_model})" if case.lra_ratio is not None else "-"
        rows.append([case.label, "-" if kpq is None else f"{kpq:.0f}",
                     *[f"{b['flop_bound']:.2f}x" for b in bounds], lra])
    section.text("FLOP-bound steps/s ratios over dense (keys per query at 4K; LRA's published ratio at 4K "
                 f"beside: {', '.join(f'{k} {v}x' for k, v in LRA_RATIOS_4K.items())}):")
    section.table(["mechanism", "keys/query @4K", *[f"L={n}" for n in LENGTHS], "LRA @4K"], rows)
    if quick:
        section.text("(measurement skipped in quick mode; `python benchmarks/lra_efficiency.py` measures "
                     "the full table at 1K-4K)")
        return
    chosen = [c for c in cases if c.mechanism in DEMO_MECHANISMS]
    # One thread and CPU time: on a machine shared with other jobs, two OpenMP threads stall at
    # every parallel region while the other is descheduled, and the mechanisms made of many small
    # operations suffer far more than SDPA (measured: BigBird 19x slower than with one thread).
    records = run_lra(chosen, DEMO_LENGTHS, threads=1, warmup=1, steps=1, max_seconds=20.0, progress=False)
    measured = build_rows(records, basis="cpu")
    plot_rows(measured, report.path("lra_efficiency.png"))
    section.text(
        "Measured in this run (one thread, process CPU time of one training step after one warm-up; "
        "every (mechanism, L) in a fresh process; ratios against the dense step of the same run). "
        "Goals are checked at the longest length shown; the benchmark checks them at 4K."
    )
    section.code(format_table(measured, basis="cpu"))
    section.figure("lra_efficiency.png", "training steps/s relative to dense, and peak memory")
