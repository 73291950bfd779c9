"""Demo section: what joint, divided and space-only attention cost as a video gets more frames."""

from __future__ import annotations

from polyformer.bench.space_time import (
    ATTENTION_TYPES,
    Case,
    format_table,
    growth,
    plot_records,
    projection_flops,
    run_space_time,
    score_flops,
)
from polyformer.demo.report import Report

#: TimeSformer-base: 224×224 frames in 16×16 patches, width 768, 12 heads of 64.
BASE_PATCHES, BASE_WIDTH, BASE_HEADS = 196, 768, 12


def add_section(report: Report, quick: bool) -> None:
    section = report.section("Video attention: joint, divided and space-only")
    section.text(
        "A video of T frames of S patches is T·S tokens. Joint attention scores (T·S)² pairs of them; "
        "divided attention (each patch position over the frames, then each frame over its patches) "
        "scores S·T² + T·S²; space-only attention T·S² (it cannot see motion). At TimeSformer-base "
        "size (S = 196, width 768, 12 heads), one layer costs, in GFLOPs of one video:"
    )
    rows = []
    head_dim = BASE_WIDTH // BASE_HEADS
    for t in (8, 16, 32, 64):
        scores = {a: score_flops(a, t, BASE_PATCHES, head_dim, BASE_HEADS) / 1e9 for a in ATTENTION_TYPES}
        proj = {a: projection_flops(a, t, BASE_PATCHES, BASE_WIDTH) / 1e9 for a in ("joint", "divided")}
        rows.append([t, t * BASE_PATCHES, scores["joint"], scores["divided"], scores["space_only"], proj["joint"],
                     proj["divided"], (scores["joint"] + proj["joint"]) / (scores["divided"] + proj["divided"])])
    section.table(["frames", "tokens", "joint scores", "divided scores", "space-only scores", "joint projections",
                   "divided projections", "joint / divided (all)"], rows)
    section.text(
        "Divided attention runs two attentions, so it pays for the q/k/v/out projections twice: at 8 frames "
        "the whole layer costs about as much as joint attention; the saving grows with the number of frames "
        "because only joint attention's scores grow with T²."
    )

    # A reduced size measured in this process so the section stays quick; the full-size figures
    # come from benchmarks/space_time_attention.py, one fresh process per case.
    patches, width, heads = 49, 192, 3
    frames = (4, 8) if quick else (4, 8, 16, 32)
    cases = [
        Case("joint dense (fused)", "joint"),
        Case("joint dense (scores held)", "joint", materialise=True),
        Case("divided dense", "divided"),
        Case("space_only dense", "space_only"),
        Case("joint linear", "joint", "linear"),
        Case(f"joint sliding_window {patches}", "joint", "sliding_window", {"window": patches, "backend": "kernel"}),
    ]
    records = run_space_time(frames, patches, width, heads, cases=cases, repeats=1 if quick else 3,
                             max_seconds=2.0, isolated=False)
    plot_records(records, report.path("space_time_attention.png"),
                 title=f"one layer, width {width}, {heads} heads, {patches} patches per frame (7×7), forward pass")
    section.text(
        f"Measured in this run at a reduced size ({patches} patches per frame, width {width}, {heads} heads, "
        "forward pass, this process): time and peak memory of one layer, with the score FLOPs. "
        "`python benchmarks/space_time_attention.py` measures TimeSformer-base size up to 64 frames."
    )
    section.code(format_table(records))
    exponents = ", ".join(f"{label} T^{k:.2f}" for label, k in growth(records).items())
    section.text(f"Time grew with the number of frames as: {exponents}.")
    section.figure("space_time_attention.png", "time, peak memory and score FLOPs of one layer against frames")
