"""Benchmark: memory-efficient attention forward+backward against dense SDPA, time and peak memory.

Target (foundation issue): memory-efficient exact attention with an additive bias, forward+backward
at N = 16K (B=1, H=8, D=64, fp32, 2 threads), within 2x of dense SDPA's time and <= 300 MB.

Each case runs in a fresh subprocess so that allocator state and library buffers of one case do
not leak into the next. Peak memory is the growth of the process's resident set (RSS) during the
first timed forward+backward, over a baseline taken after the inputs, the output gradient and a
small warm-up run exist: the peak-RSS counter (VmHWM) is reset through /proc/self/clear_refs just
before the run (where that is not available, ru_maxrss is used, which can only over-report). The
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
import resource
import subprocess
import sys
import tempfile
import time

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


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _peak_kb(reset_ok: bool) -> int:
    if reset_ok:
        return _rss_kb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


def run_case(case: str, args: argparse.Namespace) -> dict:
    """One case, timed and measured in this process (called in a fresh subprocess)."""
    import torch
    import torch.nn.functional as F

    from polyformer.attention.memory_efficient import memory_efficient_attention

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kind, causal, bias_kind = CASES[case]

    def make_inputs(n: int):
        q, k, v = (
            torch.randn(args.batch, args.heads, n, args.dim, requires_grad=True) for _ in range(3)
        )
        bias = None
        if bias_kind == "broadcast":  # a learnable per-head, per-key bias, (1, H, 1, N)
            bias = (0.1 * torch.randn(1, args.heads, 1, n)).requires_grad_(True)
        grad = torch.randn(args.batch, args.heads, n, args.dim)
        return q, k, v, bias, grad

    def step(q, k, v, bias, grad):
        t0 = time.perf_counter()
        if kind == "dense":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        else:
            out = memory_efficient_attention(
                q, k, v, causal=causal, bias=bias,
                score_mod="alibi" if bias_kind == "alibi" else None,
                q_chunk=args.q_chunk, k_chunk=args.k_chunk,
            )
        t1 = time.perf_counter()
        out.backward(grad)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    step(*make_inputs(256))  # warm-up: loads kernels and thread pools before the baseline
    inputs = make_inputs(args.n)
    baseline_kb = _rss_kb("VmRSS")
    reset_ok = _reset_peak()
    fwd_s, bwd_s = step(*inputs)
    peak_mb = (_peak_kb(reset_ok) - baseline_kb) / 1024
    for _ in range(args.repeats - 1):  # the fastest of several runs (a shared machine is noisy)
        for t in inputs[:4]:
            if t is not None:
                t.grad = None
        fwd_s, bwd_s = min((fwd_s, bwd_s), step(*inputs), key=sum)
    return {
        "case": case,
        "attention": kind,
        "causal": causal,
        "bias": bias_kind,
        "n": args.n,
        "batch": args.batch,
        "heads": args.heads,
        "dim": args.dim,
        "threads": args.threads,
        "q_chunk": args.q_chunk if kind != "dense" else None,
        "k_chunk": args.k_chunk if kind != "dense" else None,
        "fwd_ms": round(fwd_s * 1e3, 1),
        "bwd_ms": round(bwd_s * 1e3, 1),
        "ms": round((fwd_s + bwd_s) * 1e3, 1),
        "repeats": args.repeats,
        "peak_mb": round(peak_mb, 1),
        "peak_method": "VmHWM reset" if reset_ok else "ru_maxrss",
    }


def _run_in_subprocess(case: str, argv: list[str]) -> dict:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", case, *argv],
        capture_output=True, text=True, env=env, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


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
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        from polyformer.attention.memory_efficient import DEFAULT_K_CHUNK, DEFAULT_Q_CHUNK

        args.q_chunk = args.q_chunk or DEFAULT_Q_CHUNK
        args.k_chunk = args.k_chunk or DEFAULT_K_CHUNK
        print(json.dumps(run_case(args.worker, args)))
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    # Dense baselines first, for the ratios.
    needed_dense = {"dense_causal" if CASES[c][1] else "dense" for c in cases}
    ordered = sorted(set(cases) | needed_dense, key=lambda c: (CASES[c][0] != "dense", c))
    worker_argv = [
        "--n", str(args.n), "--batch", str(args.batch), "--heads", str(args.heads),
        "--dim", str(args.dim), "--threads", str(args.threads), "--repeats", str(args.repeats),
    ]
    for flag, value in (("--q-chunk", args.q_chunk), ("--k-chunk", args.k_chunk)):
        if value is not None:
            worker_argv += [flag, str(value)]
    records: dict[str, dict] = {}
    from tqdm import tqdm

    for case in tqdm(ordered, desc="cases", unit="case", file=sys.stderr):
        record = _run_in_subprocess(case, worker_argv)
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
