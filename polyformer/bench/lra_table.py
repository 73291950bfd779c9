"""The LRA-style efficiency table from the records of :func:`polyformer.bench.lra.run_lra`.

Every ratio is against the dense record *of the same run and length*: the steps/s ratio is
``dense step time / mechanism step time`` (wall clock by default, or CPU time), beside the
mechanism's FLOP-bound ratio and their quotient, and the published LRA ratio at 4K.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyformer.errors import ConfigError
from polyformer.files import save_figure

#: "Memory far below dense": at most this fraction of dense's peak at the longest length.
MEMORY_GOAL = 0.5
BASES = {"wall": "step_ms", "cpu": "cpu_ms"}


def build_rows(records: list[dict[str, Any]], basis: str = "wall") -> list[dict[str, Any]]:
    """Records with ``ratio`` (steps/s over dense), ``of_bound``, ``mem_ratio`` and, at the longest
    length, ``goal`` / ``met`` added. Records that failed (``error``) are kept without ratios.

    With a "no attention" floor record at the same length, ``attention_s`` (step time minus the
    floor's: what attention costs in the step) and ``attention_gflops`` (its attention FLOPs per
    second of that time) are added too.
    """
    if basis not in BASES:
        raise ConfigError(f"basis must be one of {', '.join(BASES)}, got {basis!r}")
    key = BASES[basis]
    dense = {r["n"]: r for r in records if r["mechanism"] == "dense" and key in r}
    floor = {r["n"]: r for r in records if r["mechanism"] == "none" and key in r}
    longest = max((r["n"] for r in records), default=0)
    rows = []
    for record in records:
        row = dict(record)
        base = dense.get(record["n"])
        if base is not None and key in record:
            row["ratio"] = base[key] / record[key]
            if record.get("flop_bound"):
                row["of_bound"] = row["ratio"] / record["flop_bound"]
            if base.get("peak_mb"):
                row["mem_ratio"] = record["peak_mb"] / base["peak_mb"]
        below = floor.get(record["n"])
        if below is not None and key in record and record["mechanism"] != "none":
            row["attention_s"] = (record[key] - below[key]) / 1e3
            if row["attention_s"] > 0 and record.get("flops_attention"):
                row["attention_gflops"] = record["flops_attention"] / row["attention_s"] / 1e9
        if record["n"] == longest and record["mechanism"] not in ("dense", "none", "materialized"):
            row["goal"], row["met"] = _goal(row)
        rows.append(row)
    return rows


def _goal(row: dict[str, Any]) -> tuple[str, bool | None]:
    """The row's goal in words, each part marked ``(met)`` or ``(missed)``, and whether this run
    meets all of it (None: not measured)."""
    checks: list[tuple[str, bool]] = []
    if row.get("min_ratio") is not None:
        checks.append((f"ratio >= {row['min_ratio']:g}x", row.get("ratio", 0.0) >= row["min_ratio"]))
    if row.get("min_of_bound") is not None:
        checks.append((f">= {row['min_of_bound']:.0%} of bound", row.get("of_bound", 0.0) >= row["min_of_bound"]))
    checks.append((f"memory <= {MEMORY_GOAL:.0%} of dense", row.get("mem_ratio", float("inf")) <= MEMORY_GOAL))
    text = ", ".join(f"{part} ({'met' if ok else 'missed'})" for part, ok in checks)
    return text, (all(ok for _, ok in checks) if "ratio" in row else None)


def _labels(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["label"] for r in rows))


def format_table(rows: list[dict[str, Any]], basis: str = "wall") -> str:
    """Three plain-text tables: ratios per length (LRA Table 2 style), peak memory per length,
    and the detail at the longest length with the FLOP bound, LRA's ratio and the goals."""
    lengths = sorted({r["n"] for r in rows})
    by = {(r["label"], r["n"]): r for r in rows}
    labels = _labels(rows)
    longest = lengths[-1] if lengths else 0
    width = max([len(x) for x in labels] + [12])
    first = rows[0] if rows else {}
    lines = [
        f"Training steps/s relative to dense ({basis} time, median step), batch {first.get('batch', '?')}, "
        f"{first.get('threads', '?')} thread(s); in brackets: the FLOP-bound ratio",
        "(our dense is fused SDPA; LRA's published ratios are against a Transformer that materialises N x N)",
        f"{'mechanism':{width}s} " + " ".join(f"{n:>15d}" for n in lengths) + "   LRA @4K",
    ]
    for label in labels:
        cells = []
        for n in lengths:
            r = by.get((label, n))
            if r is None:
                cells.append(f"{'':>15s}")
            elif "ratio" not in r:
                cells.append(f"{str(r.get('error', 'failed'))[:15]:>15s}")
            else:
                bound = f"({r['flop_bound']:.2f})" if r.get("flop_bound") else ""
                cells.append(f"{r['ratio']:>6.2f}x {bound:>7s}")
        any_row = next(r for r in rows if r["label"] == label)
        lra = (f"{any_row['lra_ratio_4k']:.1f}x {any_row['lra_model']}" if any_row.get("lra_ratio_4k") is not None
               else "")
        lines.append(f"{label:{width}s} " + " ".join(cells) + f"   {lra}")

    lines += ["", "Peak memory (MB, resident-set growth during a training step); in brackets: relative to dense",
              f"{'mechanism':{width}s} " + " ".join(f"{n:>15d}" for n in lengths)]
    for label in labels:
        cells = []
        for n in lengths:
            r = by.get((label, n))
            if r is None or "peak_mb" not in r:
                cells.append(f"{'':>15s}")
            else:
                rel = f"({r['mem_ratio']:.2f})" if "mem_ratio" in r else ""
                cells.append(f"{r['peak_mb']:>7.0f} {rel:>7s}")
        lines.append(f"{label:{width}s} " + " ".join(cells))

    header = (f"{'mechanism':{width}s} {'keys/q':>7s} {'step s':>7s} {'ratio':>6s} {'bound':>6s} "
              f"{'of bound':>8s} {'LRA':>5s} {'peak MB':>8s} {'mem/dense':>9s} {'attn s':>6s} {'GF/s':>5s}  goal")
    lines += ["", f"At N = {longest} (ratio: measured steps/s over dense; bound: FLOP-bound ratio; attn s: step "
              "time minus the no-attention floor's, GF/s: attention FLOPs per second of it)", header]
    for label in labels:
        r = by.get((label, longest))
        if r is None:
            continue
        if "ratio" not in r:
            lines.append(f"{label:{width}s} {str(r.get('error', 'failed'))[:80]}")
            continue
        kpq = f"{r['keys_per_query']:.0f}" if r.get("keys_per_query") is not None else "-"
        bound = f"{r['flop_bound']:.2f}" if r.get("flop_bound") else "-"
        of_bound = f"{r['of_bound']:.0%}" if "of_bound" in r else "-"
        lra = f"{r['lra_ratio_4k']:.1f}" if r.get("lra_ratio_4k") is not None else "-"
        mem = f"{r['mem_ratio']:.2f}" if "mem_ratio" in r else "-"
        attn = f"{r['attention_s']:.2f}" if "attention_s" in r else "-"
        gflops = f"{r['attention_gflops']:.0f}" if "attention_gflops" in r else "-"
        goal = ""
        if "goal" in r:
            goal = f"{'MET' if r['met'] else 'MISSED'}: {r['goal']}"
        lines.append(f"{label:{width}s} {kpq:>7s} {r[BASES[basis]] / 1e3:>7.2f} {r['ratio']:>5.2f}x {bound:>6s} "
                     f"{of_bound:>8s} {lra:>5s} {r['peak_mb']:>8.0f} {mem:>9s} {attn:>6s} {gflops:>5s}  {goal}")
    return "\n".join(line.rstrip() for line in lines)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The goals at the longest length as one JSON-ready dict."""
    goals = [
        {"label": r["label"], "n": r["n"], "goal": r["goal"], "met": r["met"], "ratio": r.get("ratio"),
         "flop_bound": r.get("flop_bound"), "of_bound": r.get("of_bound"), "mem_ratio": r.get("mem_ratio")}
        for r in rows if "goal" in r
    ]
    return {"summary": True, "goals": goals, "all_met": all(g["met"] for g in goals) if goals else None}


def plot_rows(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """Steps/s ratio over dense against length (dotted: the FLOP bound) and peak memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_speed, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.8))
    for index, label in enumerate(_labels(rows)):
        color = f"C{index % 10}"
        points = sorted((r["n"], r) for r in rows if r["label"] == label and "ratio" in r)
        if not points:
            continue
        ns = [n for n, _ in points]
        ax_speed.plot(ns, [r["ratio"] for _, r in points], "-o", color=color, label=label)
        if all(r.get("flop_bound") for _, r in points):
            ax_speed.plot(ns, [r["flop_bound"] for _, r in points], ":", color=color)
        ax_mem.plot(ns, [max(r["peak_mb"], 1.0) for _, r in points], "-o", color=color, label=label)
    ax_speed.set_title("training steps/s relative to dense (dotted: FLOP bound)")
    ax_speed.set_ylabel("ratio")
    ax_mem.set_title("peak memory of a training step")
    ax_mem.set_ylabel("MB")
    ax_mem.set_yscale("log")
    for ax in (ax_speed, ax_mem):
        ax.set_xlabel("sequence length L")
        ax.grid(True, alpha=0.3)
    ax_speed.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


__all__ = ["BASES", "MEMORY_GOAL", "build_rows", "format_table", "plot_rows", "summary"]
