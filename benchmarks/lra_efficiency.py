"""Long Range Arena's efficiency table (Tay et al. 2020, Table 2) for polyformer's mechanisms.

A byte-level classifier (4 layers, d=256, 4 heads, MLP 1024, CLS pooling, batch 8) takes a few
training steps (forward + backward + AdamW) at L = 1K, 2K, 3K, 4K with each registered mechanism
of the table, every (mechanism, L) in a fresh process. Prints one JSON record per line as they
arrive, then the table (steps/s relative to dense in the same run, with the FLOP-bound ratio,
LRA's published ratios at 4K, peak memory), then a JSON summary of the goals at the longest L::

    python benchmarks/lra_efficiency.py                           # full table, 2 threads
    python benchmarks/lra_efficiency.py --threads 1 --basis cpu   # a shared machine
    python benchmarks/lra_efficiency.py --lengths 1024 2048 --mechanisms dense bigbird lsh
    python benchmarks/lra_efficiency.py --quick                   # a tiny model, L = 256, 512

``--out DIR`` writes ``lra_efficiency.jsonl``, ``lra_efficiency.txt`` and ``lra_efficiency.png``
there. Two reference rows come with the mechanisms: "no attention (floor)" (attention replaced
by ``v``: the time of everything else, so ``step - floor`` is what attention costs) and, up to
``--materialized-max-n``, LRA's vanilla Transformer that forms the (N, N) matrix. On a machine
shared with other jobs wall times say little: ``--basis cpu`` builds the ratios from the process
CPU time (steadier with ``--threads 1``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from polyformer.bench.lra import BATCH, LENGTHS, default_cases, records_to_json_lines, run_lra
from polyformer.bench.lra_table import build_rows, format_table, plot_rows, summary
from polyformer.files import atomic_write_text

QUICK_MODEL = {"d_model": 64, "n_heads": 4, "n_layers": 2, "d_ff": 256}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS), help="sequence lengths L")
    parser.add_argument("--mechanisms", nargs="+", default=None,
                        help="mechanism names to keep (default: every row whose mechanism is registered)")
    parser.add_argument("--threads", type=int, default=2, help="threads per measurement (default 2)")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default 3; median and fastest)")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="stop timing a case after this many seconds (at least one step)")
    parser.add_argument("--lsh-hashes", type=int, default=2, help="hashing rounds of the lsh row (default 2)")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="leave out the row with attention replaced by v (the time of everything else)")
    parser.add_argument("--materialized-max-n", type=int, default=2048,
                        help="add LRA's vanilla Transformer (dense through the (N, N) matrix) up to this L; "
                             "its memory grows as N² (8.6 GB at 4K), 0 = leave it out (default 2048)")
    parser.add_argument("--basis", choices=("wall", "cpu"), default="wall", help="time the ratios use")
    parser.add_argument("--quick", action="store_true", help="tiny model at L = 256, 512 (seconds)")
    parser.add_argument("--out", type=Path, default=None, help="folder for .jsonl, .txt and .png")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = None
    if args.quick:
        model, args.lengths, args.steps, args.batch = QUICK_MODEL, [256, 512], 1, 2
        args.materialized_max_n = min(args.materialized_max_n, 512)
    cases = default_cases(lsh_hashes=args.lsh_hashes)
    if args.mechanisms:
        cases = [c for c in cases if c.mechanism in args.mechanisms or c.mechanism == "dense"]
    records = run_lra(
        cases, args.lengths, threads=args.threads, batch=args.batch, model=model, warmup=args.warmup,
        steps=args.steps, max_seconds=args.max_seconds, floor=args.floor,
        materialized_max_n=args.materialized_max_n,
        on_record=lambda r: print(json.dumps(r, default=list), flush=True),
    )
    rows = build_rows(records, basis=args.basis)
    table = format_table(rows, basis=args.basis)
    result = summary(rows)
    print(table)
    print(json.dumps(result))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "lra_efficiency.jsonl", records_to_json_lines(records) + "\n")
        atomic_write_text(args.out / "lra_efficiency.txt", table + "\n")
        plot_rows(rows, args.out / "lra_efficiency.png")
    return 0 if all("error" not in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
