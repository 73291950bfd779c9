"""ViT training on large images (512×512: 1,024 patches of 16×16, and up) with each attention mechanism.

Every (image size, mechanism) case runs one ViT training step (forward, backward, AdamW) in a fresh
interpreter, timing the fastest of a few steps and the peak memory growth. Dense attention is the
baseline of the same run; sparse mechanisms (sliding window, Longformer with the class token
global, BigBird) and any other registered mechanism named with --mechanisms (e.g. ``linear``) are
compared to it. A case that takes longer than --timeout or fails (out of memory) is reported as such.

    python benchmarks/vit_large_input.py --sizes 512 1024 --json
"""

from __future__ import annotations

import argparse
import json

from polyformer.attention import list as registered
from polyformer.bench.measure import run_isolated

MECHANISMS = {
    "dense": "dense",
    "sliding_window": {"name": "sliding_window", "options": {"window": 128}},
    "longformer": {"name": "longformer", "options": {"window": 128, "global_tokens": [0]}},  # the class token sees all
    "bigbird": {"name": "bigbird", "options": {"block_size": 64, "window_blocks": 3, "global_blocks": 1, "random_blocks": 2}},
    "linear": "linear",
    "performer": "performer",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="image sides in pixels")
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--d-model", type=int, default=192, help="width (ViT-Tiny: 192)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case before it counts as too slow")
    parser.add_argument("--mechanisms", nargs="+", default=list(MECHANISMS))
    parser.add_argument("--json", action="store_true", help="one JSON record per line only")
    args = parser.parse_args()
    available = set(registered())
    records = []
    for size in args.sizes:
        base = None
        for name in args.mechanisms:
            spec = MECHANISMS.get(name, name)
            mechanism = spec if isinstance(spec, str) else spec["name"]
            if mechanism not in available:
                record = {"size": size, "mechanism": name, "skipped": "not registered in this build"}
            else:
                params = dict(image_size=size, patch_size=args.patch, d_model=args.d_model, n_layers=args.layers,
                              n_heads=args.heads, batch=args.batch, attention=spec)
                result = run_isolated("polyformer.bench.vit_training:measure_vit_step", params, threads=args.threads,
                                      timeout=args.timeout)
                record = {"size": size, "patches": (size // args.patch) ** 2, "mechanism": name, **result}
                if name == "dense" and "ms" in result:
                    base = result
                if base and "ms" in result:
                    record["speedup_vs_dense"] = base["ms"] / result["ms"]
                    record["memory_vs_dense"] = result["peak_mb"] / max(base["peak_mb"], 1e-9)
            records.append(record)
            print(json.dumps(record) if args.json else _line(record), flush=True)


def _line(r: dict) -> str:
    if "skipped" in r or "error" in r:
        return f"{r['size']:>5}px {r['mechanism']:<15} {r.get('skipped') or r.get('error')}"
    extra = f"  x{r['speedup_vs_dense']:.2f} time, x{r['memory_vs_dense']:.2f} memory vs dense" if "speedup_vs_dense" in r else ""
    return f"{r['size']:>5}px {r['mechanism']:<15} {r['ms'] / 1e3:7.2f} s/step  {r['peak_mb']:8.0f} MB{extra}"


if __name__ == "__main__":
    main()
