"""Joint, divided and space-only attention over a video as frames grow: time, peak memory and FLOPs.

One attention layer of TimeSformer-base width (768, 12 heads) on one video of 14×14 = 196 patches
per frame, forward pass only, each case in a fresh interpreter. Beside each figure: the FLOPs of
the score computations, (T·S)² pairs for joint, S·T² + T·S² for divided and T·S² for space-only
(times 4·head_dim·heads), and of the projections. Cheaper mechanisms (memory_efficient, linear,
performer, a sliding window one frame wide) run on the joint sequence too. Joint attention that
holds its scores (as eager implementations do) is skipped where they would need more than
--max-held-mb; the record says so.

    python benchmarks/space_time_attention.py --plot runs/bench/space_time.png
    python benchmarks/space_time_attention.py --frames 8 16 --json
"""

from __future__ import annotations

import argparse
import json
import os
import time

from polyformer.bench.space_time import default_cases, format_table, growth, plot_records, run_space_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--patches", type=int, default=196, help="patches per frame (224/16 squared = 196)")
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case (fewer past --max-seconds)")
    parser.add_argument("--max-seconds", type=float, default=5.0, help="stop timing a case after this long")
    parser.add_argument("--max-held-mb", type=float, default=2048.0,
                        help="skip joint attention holding its scores where they would need more than this")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case before it counts as too slow")
    parser.add_argument("--only", nargs="+", help="run only the cases whose label contains one of these words")
    parser.add_argument("--plot", help="write the figure (PNG) here")
    parser.add_argument("--json", action="store_true", help="print one JSON document only")
    args = parser.parse_args()

    cases = default_cases(args.patches)
    if args.only:
        cases = [c for c in cases if any(word in c.label for word in args.only)]
    load_before = os.getloadavg()
    start = time.perf_counter()
    records = run_space_time(
        args.frames, args.patches, args.d_model, args.heads, cases=cases, batch=args.batch, threads=args.threads,
        repeats=args.repeats, max_seconds=args.max_seconds, max_held_mb=args.max_held_mb, timeout=args.timeout,
    )
    elapsed = time.perf_counter() - start
    settings = {k: getattr(args, k) for k in ("frames", "patches", "d_model", "heads", "batch", "threads",
                                                "repeats", "max_held_mb")}
    document = {
        "settings": {**settings, "pass": "forward, no gradients", "dtype": "float32"},
        "records": records,
        "time_growth_exponent": growth(records, "ms"),
        "elapsed_s": elapsed,
        # Timings with two threads suffer when other work shares the cores: small parallel
        # operations (the sparse kernel's tiles) wait for a descheduled thread. Read them with this.
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
    }
    if args.plot:
        title = (f"one attention layer, d_model {args.d_model}, {args.heads} heads, {args.patches} patches/frame, "
                 f"batch {args.batch}, {args.threads} threads")
        document["plot"] = str(plot_records(records, args.plot, title))
    if args.json:
        print(json.dumps(document, indent=1))
        return
    print(format_table(records))
    print("time grows as T^k, k =", {k: round(v, 2) for k, v in document["time_growth_exponent"].items()})
    print(f"{elapsed:.0f} s" + (f"; figure: {document['plot']}" if args.plot else ""))


if __name__ == "__main__":
    main()
