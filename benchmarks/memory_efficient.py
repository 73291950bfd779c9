"""Benchmark: memory-efficient attention forward+backward against dense SDPA, time and peak memory.

Target: memory-efficient exact attention with an additive bias, forward+backward at N = 16K
(B=1, H=8, D=64, fp32, 2 threads), within 2x of dense SDPA's time and <= 300 MB.

Each case runs in a fresh interpreter (:func:`polyformer.bench.measure.run_isolated`) so that
allocator state and library buffers of one case do not leak into the next. Peak memory is the
growth of the process's resident set (RSS) during the timed forward+backward runs, over a
baseline taken after the inputs, the output gradient and a small warm-up run exist: the peak-RSS
counter (VmHWM) is reset through /proc/self/clear_refs just before the runs (where that is not
available, ru_maxrss is used, which can only over-report). Gradients of one run are dropped
before the next, so repeats do not raise the peak. The
growth therefore includes the output, the gradients of q, k, v (and of a learnable bias) and
every temporary buffer. The dense baseline is ``torch.nn.functional.scaled_dot_product_attention``
(no bias) forward+backward in the same run. With ``--repeats`` the fastest run is reported.

Usage::

    python benchmarks/memory_efficient.py                  # the 16K target cases, JSON on stdout
    python benchmarks/memory_efficient.py --n 4096 --cases dense,alibi --plot bench.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from polyformer.bench.measure import peak_reset_supported, run_isolated, stopwatch, time_calls

# Cases: (attention, causal, bias kind). Each memory-efficient case is compared with dense SDPA
# of the same causality.
CASES = {
    "dense": ("dense", False, None),
    "dense_causal": ("dense", True, None),
    "alibi": ("memory_efficient", False, "alibi"),
    "alibi_causal": ("memory_efficient", True, "alibi"),
    "broadcast_bias": ("memory_efficient", False, "broadcast"),
    "broadcast_bias_causal": ("memory_efficient", True, "broadcast"),
    "no_bias": ("memory_efficient", False, None),
}
DEFAULT_CASES = "dense,dense_causal,alibi,alibi_causal,broadcast_bias"


def run_case(
    case: str, *, n: int, batch: int, heads: int, dim: int, threads: int, repeats: int,
    q_chunk: int | None = None, k_chunk: int | None = None,
) -> dict:
    """One case, timed and measured in this process (called in a fresh interpreter)."""
    import torch
    import torch.nn.functional as F

    from polyformer.attention.memory_efficient import DEFAULT_K_CHUNK, DEFAULT_Q_CHUNK, memory_efficient_attention

    q_chunk, k_chunk = q_chunk or DEFAULT_Q_CHUNK, k_chunk or DEFAULT_K_CHUNK
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    kind, causal, bias_kind = CASES[case]

    def make_inputs(length: int):
        q, k, v = (torch.randn(batch, heads, length, dim, requires_grad=True) for _ in range(3))
        bias = None
        if bias_kind == "broadcast":  # a learnable per-head, per-key bias, (1, H, 1, N)
            bias = (0.1 * torch.randn(1, heads, 1, length)).requires_grad_(True)
        grad = torch.randn(batch, heads, length, dim)
        return q, k, v, bias, grad

    splits: list[tuple[float, float]] = []  # (forward, backward) seconds of each timed run

    def step(q, k, v, bias, grad) -> None:
        for t in (q, k, v, bias):
            if t is not None:
                t.grad = None
        with stopwatch() as forward:
            if kind == "dense":
                out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            else:
                out = memory_efficient_attention(
                    q, k, v, causal=causal, bias=bias, score_mod="alibi" if bias_kind == "alibi" else None,
                    q_chunk=q_chunk, k_chunk=k_chunk,
                )
        with stopwatch() as backward:
            out.backward(grad)
        splits.append((forward.wall, backward.wall))

    # Warm up at a small length (kernels, thread pools), not at full size: a full-size warm-up
    # would leave freed buffers in the allocator and hide part of the case's own peak.
    step(*make_inputs(256))
    inputs = make_inputs(n)
    splits.clear()
    timings = time_calls(lambda: step(*inputs), repeats=repeats, warmup=0, memory=True)
    fwd_s, bwd_s = min(splits, key=sum)  # the fastest of several runs (a shared machine is noisy)
    return {
        "case": case,
        "attention": kind,
        "causal": causal,
        "bias": bias_kind,
        "n": n,
        "batch": batch,
        "heads": heads,
        "dim": dim,
        "threads": threads,
        "q_chunk": q_chunk if kind != "dense" else None,
        "k_chunk": k_chunk if kind != "dense" else None,
        "fwd_ms": round(fwd_s * 1e3, 1),
        "bwd_ms": round(bwd_s * 1e3, 1),
        "ms": round((fwd_s + bwd_s) * 1e3, 1),
        "repeats": repeats,
        "peak_mb": round(timings.peak_mb, 1),
        "peak_method": "VmHWM reset" if peak_reset_supported() else "ru_maxrss",
    }


def _run_isolated(case: str, params: dict) -> dict:
    record = run_isolated(f"{Path(__file__).resolve()}:run_case", {"case": case, **params}, threads=params["threads"])
    if "error" in record:
        raise RuntimeError(f"case {case} failed: {record['error']}")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16384, help="sequence length (queries = keys)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--q-chunk", type=int, default=None, help="default: the library default")
    parser.add_argument("--k-chunk", type=int, default=None, help="default: the library default")
    parser.add_argument("--repeats", type=int, default=1, help="report the fastest of this many runs")
    parser.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated from {', '.join(CASES)}")
    parser.add_argument("--plot", default=None, help="also draw time and peak memory to this PNG")
    args = parser.parse_args(argv)

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    # Dense baselines first, for the ratios.
    needed_dense = {"dense_causal" if CASES[c][1] else "dense" for c in cases}
    ordered = sorted(set(cases) | needed_dense, key=lambda c: (CASES[c][0] != "dense", c))
    params = {"n": args.n, "batch": args.batch, "heads": args.heads, "dim": args.dim, "threads": args.threads,
              "repeats": args.repeats, "q_chunk": args.q_chunk, "k_chunk": args.k_chunk}
    records: dict[str, dict] = {}
    from tqdm import tqdm

    for case in tqdm(ordered, desc="cases", unit="case", file=sys.stderr):
        record = _run_isolated(case, params)
        kind, causal, _ = CASES[case]
        if kind != "dense":
            dense = records["dense_causal" if causal else "dense"]
            record["dense_ms"] = dense["ms"]
            record["ratio_to_dense"] = round(record["ms"] / dense["ms"], 3)
            record["meets_target"] = record["ratio_to_dense"] <= 2.0 and record["peak_mb"] <= 300
        records[case] = record
        print(json.dumps(record), flush=True)
    if args.plot:
        plot(list(records.values()), args.plot)
    return 0


def plot(records: list[dict], path: str) -> None:
    """Two bar charts: forward+backward time and peak memory per case (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["case"] for r in records]
    colors = ["tab:gray" if r["attention"] == "dense" else "tab:blue" for r in records]
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4))
    ax_time.barh(names, [r["ms"] / 1e3 for r in records], color=colors)
    ax_time.set_xlabel("forward + backward (s)")
    ax_time.set_xlim(0, 1.4 * max(r["ms"] for r in records) / 1e3)  # room for the ratio labels
    for i, r in enumerate(records):
        if "ratio_to_dense" in r:
            ax_time.annotate(f" {r['ratio_to_dense']:.2f}x dense", (r["ms"] / 1e3, i), va="center")
    ax_mem.barh(names, [r["peak_mb"] for r in records], color=colors)
    ax_mem.axvline(300, color="tab:red", linestyle="--", label="300 MB target")
    ax_mem.set_xlabel("peak memory growth (MB)")
    ax_mem.legend(loc="lower right")
    first = records[0]
    fig.suptitle(
        f"memory-efficient vs dense SDPA: N={first['n']}, B={first['batch']}, H={first['heads']}, "
        f"D={first['dim']}, {first['threads']} threads"
    )
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


if __name__ == "__main__":
    sys.exit(main())
