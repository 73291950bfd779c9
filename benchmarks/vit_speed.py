"""ViT-B/16 forward throughput: polyformer against Hugging Face's ViTForImageClassification, same weights.

One random ViT-B/16 (224×224, 1000 classes) is built by transformers, saved, and loaded by
polyformer, so both models hold identical weights. Each mode runs both models alternately, call
by call (``--rounds`` × ``--repeats`` timed calls each after one warm-up; the best call counts),
batch 8, forward only:

* ``fp32``: float32 weights and activations, eager;
* ``bf16``: the same checkpoint loaded in bfloat16 (``from_pretrained(dtype=torch.bfloat16)``);
  on CPUs with AMX / AVX512-BF16 the matmuls run several times faster, at bf16 precision;
* ``compiled`` (``--compile``): float32, ``torch.compile`` with weight freezing, for both models.

Prints one JSON record per mode (images/s, speedup over Hugging Face in the same mode and over
Hugging Face's fp32 eager baseline, max |logit difference|) and a summary line.

    python benchmarks/vit_speed.py --threads 2
    python benchmarks/vit_speed.py --small --repeats 1 --rounds 1   # a 2-layer model (smoke test)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any

import torch

from polyformer.bench.measure import time_interleaved


def build_pair(dtype: torch.dtype, folder: str) -> tuple[Any, Any]:
    import transformers

    import polyformer

    hf = transformers.ViTForImageClassification.from_pretrained(folder, dtype=dtype).eval()
    ours = polyformer.from_pretrained(folder, dtype=dtype)
    return hf, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "compiled"])
    parser.add_argument("--compile", action="store_true", help="add the torch.compile mode")
    parser.add_argument("--small", action="store_true", help="a 2-layer ViT-B-width model (smoke test)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    modes = list(args.modes) + (["compiled"] if args.compile and "compiled" not in args.modes else [])
    config = transformers.ViTConfig(image_size=args.image_size, num_labels=1000,
                                    num_hidden_layers=2 if args.small else 12)
    torch.manual_seed(0)
    folder = tempfile.mkdtemp(prefix="vit-b16-")
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    pixels = torch.randn(args.batch, 3, args.image_size, args.image_size)
    baseline = None
    records = []
    for mode in modes:
        dtype = torch.bfloat16 if mode == "bf16" else torch.float32
        hf, ours = build_pair(dtype, folder)
        x = pixels.to(dtype)
        run_hf, run_ours = (lambda: hf(x).logits), (lambda: ours(x).logits)
        if mode == "compiled":
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            hf_c, ours_c = torch.compile(hf), torch.compile(ours)
            run_hf, run_ours = (lambda: hf_c(x).logits), (lambda: ours_c(x).logits)
        with torch.no_grad():
            diff = (run_hf().float() - run_ours().float()).abs().max().item()
        with torch.no_grad():  # alternate call by call, so load changes on a shared machine hit both
            timings = time_interleaved({"hf": run_hf, "ours": run_ours}, repeats=args.rounds * args.repeats)
        t_hf, t_ours = timings["hf"].best, timings["ours"].best
        if mode == "fp32":
            baseline = t_hf
        record = {
            "benchmark": "vit_b16_forward", "mode": mode, "batch": args.batch, "image_size": args.image_size,
            "threads": args.threads, "layers": config.num_hidden_layers,
            "hf_images_per_s": args.batch / t_hf, "ours_images_per_s": args.batch / t_ours,
            "speedup_same_mode": t_hf / t_ours,
            "speedup_vs_hf_fp32_eager": (baseline / t_ours) if baseline else None,
            "max_abs_logit_diff": diff,
        }
        records.append(record)
        print(json.dumps(record), flush=True)
    summary = {r["mode"]: round(r["speedup_same_mode"], 3) for r in records}
    print(json.dumps({"summary": "speedup over Hugging Face in the same mode", **summary}))


if __name__ == "__main__":
    main()
