"""Demo section: the atomic and composite patterns, their exactness, and a small benchmark."""

from __future__ import annotations

import torch

from polyformer import attention
from polyformer.attention import patterns as P
from polyformer.attention.composites import bigbird, longformer
from polyformer.attention.pictures import draw_gallery
from polyformer.demo.report import Report


def add_section(report: Report, quick: bool) -> None:
    section = report.section("Efficient attention: sparse patterns")
    n = 64
    atoms = [
        ("global", P.Global([0, n // 2])),
        ("band (sliding window)", P.Band(3, 3)),
        ("dilated", P.Dilated(3, 3, 2)),
        ("random", P.Random(3, seed=0)),
        ("block-local", P.BlockLocal(8)),
        ("causal band", P.Band(6, 0)),
        ("Longformer", longformer(8, global_tokens=[0, 1])),
        ("BigBird ITC", bigbird(block_size=4, window_blocks=3, global_blocks=2, random_blocks=2)),
    ]
    draw_gallery(atoms, n, report.path("attention_patterns.png"))
    section.text(
        "The five atomic patterns and two composites (rows: queries, columns: keys; blue = attend). "
        "Each is a small mask function; composites are unions of atoms."
    )
    section.figure("attention_patterns.png", f"atomic and composite patterns at N={n}")

    rows = []
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 300, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))
    for name, options in [
        ("sliding_window", {"window": 32}), ("dilated", {"window": 8, "dilation": 3}),
        ("random", {"count": 16}), ("block_local", {"size": 64}), ("global", {"tokens": (0, 150)}),
        ("longformer", {"window": 32, "global_tokens": (0,)}), ("bigbird", {"block_size": 16}),
    ]:
        mech = attention.build(name, backend="kernel", tile_size=32, **options)
        out = mech(q, k, v, causal=False)
        ref = attention.reference_attention(q, k, v, allowed=mech.pattern.dense(300, 4))
        g_out = torch.autograd.grad(out.sum(), q)[0]
        g_ref = torch.autograd.grad(ref.sum(), q)[0]
        rows.append([name, f"{(out - ref).abs().max().item():.1e}", f"{(g_out - g_ref).abs().max().item():.1e}"])
    section.text("The sparse kernel is exact: its output and gradient against the dense masked reference "
                 "(float64, N=300, 4 heads):")
    section.table(["mechanism", "max |out − ref|", "max |∂q − ref|"], rows)

    if quick:
        section.text("(benchmark skipped in quick mode; run `polyformer attention bench`)")
        return
    from polyformer.bench.attention import default_cases, format_table, plot_records, run_bench

    ns = [1024, 4096]
    wanted = ("dense", "sliding_window 512 causal", "longformer 512 + 8 global", "bigbird itc 64/3/2/3")
    cases = [c for c in default_cases(hf=False) if c.label in wanted or c.label == "dense causal"]
    records = run_bench(cases, ns, threads=2, repeats=2, progress=False)
    plot_records(records, report.path("attention_bench.png"))
    section.text(
        "Time and peak memory against dense SDPA measured in this run (B=1, H=8, D=64, fp32, 2 threads). "
        "`polyformer attention bench` runs the full table up to N=64K."
    )
    section.code(format_table(records))
    section.figure("attention_bench.png", "time and memory against sequence length")
