"""GPT-2 speed against Hugging Face ``transformers``, both measured in the same run on the same weights.

    python benchmarks/gpt_speed.py --json                    # training and generation
    python benchmarks/gpt_speed.py --part train --dtype bf16
    python benchmarks/gpt_speed.py --quick                   # tiny sizes, seconds (smoke test)

Training: a 6-layer, d=384, 6-head GPT-2 (GPT-2's vocabulary) at context 256; Hugging Face's
``GPT2LMHeadModel`` weights are converted into polyformer's model, both train with the same
AdamW on the same batch, and steps alternate between the two so that a busy machine slows both
alike. Reported: the fastest and the median step of each, tokens/s, and the model FLOP
utilisation (6·N + 6·layers·context·d FLOPs per token, N = weights used in matmuls, head included)
against ``--peak-gflops``.

Generation: a GPT-2-small-sized model (random weights), batch 1, greedy, ``--new-tokens`` tokens
after a 16-token prompt: polyformer's ``generate`` against ``model.generate``, plain and with
prompt-lookup speculation on both sides (``--prompt-lookup``); every variant must produce the same
tokens. Batch-1 decoding reads all weights per token, so plain decoding is bound by memory
bandwidth on both sides; speculation gains as much as the text repeats (random-weight models
repeat a lot, natural text less).

Each result is one JSON line (``--json``) or a readable line.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from tqdm.auto import tqdm

from polyformer.bench.measure import Timings, time_interleaved
from polyformer.generation import generate
from polyformer.models.gpt import GPTConfig, GPTLMHeadModel

PEAK_GFLOPS = {"fp32": 190.0, "bf16": 420.0}  # the 2-core development CPU; fp32 matmul reaches ~290 when quiet


def _hf():
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def _pair(hf_config):
    """A Hugging Face GPT2LMHeadModel and polyformer's model holding the same weights."""
    transformers = _hf()
    hf = transformers.GPT2LMHeadModel(hf_config)
    ours = GPTLMHeadModel(GPTConfig.from_hf(hf_config.to_dict()))
    ours.load_hf_state_dict(hf.state_dict(), "transformers' GPT2LMHeadModel")
    return hf, ours


def _matmul_weights(model: GPTLMHeadModel) -> int:
    """Weights that take part in matmuls: every Linear of the stack plus the output head."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def _autocast(dtype: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")


def _speedups(hf: Timings, ours: Timings) -> dict[str, float]:
    """Hugging Face's time over ours: fastest calls, medians, and fastest CPU times."""
    return {
        "speedup_best": round(hf.best / ours.best, 3),
        "speedup_median": round(hf.median / ours.median, 3),
        # CPU seconds of the process per call: less sensitive to other programs sharing the cores
        "speedup_cpu_time_best": round(hf.cpu_best / ours.cpu_best, 3),
    }


def bench_train(args) -> dict:
    transformers = _hf()
    size = dict(n_embd=64, n_layer=2, n_head=2, vocab_size=1000) if args.quick else dict(n_embd=384, n_layer=6, n_head=6)
    context = 32 if args.quick else args.context
    hf_config = transformers.GPT2Config(n_positions=context, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **size)
    torch.manual_seed(0)
    hf, ours = _pair(hf_config)
    ids = torch.randint(0, hf_config.vocab_size, (args.batch, context))
    optimiser_options = dict(lr=3e-4, weight_decay=0.1)
    if args.optimizer != "default":
        optimiser_options[args.optimizer] = True
    sides = {
        "polyformer": (ours.train(), torch.optim.AdamW(ours.parameters(), **optimiser_options)),
        "hf": (hf.train(), torch.optim.AdamW(hf.parameters(), **optimiser_options)),
    }
    first_loss = {}

    def step(name):
        model, optimiser = sides[name]
        with _autocast(args.dtype):
            loss = model(ids, labels=ids).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        first_loss.setdefault(name, loss.item())

    with tqdm(total=args.steps, desc="training steps (both sides)", disable=args.json) as bar:
        timings = time_interleaved({name: (lambda name=name: step(name)) for name in sides}, repeats=args.steps,
                                   warmup=1, on_round=bar.update)
    tokens = args.batch * context
    flops_per_token = 6 * _matmul_weights(ours) + 6 * hf_config.n_layer * context * hf_config.n_embd
    peak = args.peak_gflops or PEAK_GFLOPS[args.dtype]
    result = {
        "benchmark": "gpt2_train", "dtype": args.dtype, "threads": torch.get_num_threads(),
        "config": {"layers": hf_config.n_layer, "d": hf_config.n_embd, "heads": hf_config.n_head,
                   "vocab": hf_config.vocab_size, "context": context, "batch": args.batch},
        "optimizer": f"AdamW({args.optimizer})", "hf_attention": hf.config._attn_implementation,
        "first_loss_difference": abs(first_loss["polyformer"] - first_loss["hf"]),
        "flops_per_token": flops_per_token, "peak_gflops": peak,
    }
    for name, t in timings.items():
        result[name] = {
            "step_s_best": round(t.best, 4), "step_s_median": round(t.median, 4),
            "tokens_per_s_best": round(tokens / t.best, 1), "tokens_per_s_median": round(tokens / t.median, 1),
            "mfu_best": round(flops_per_token * tokens / t.best / (peak * 1e9), 4),
        }
    result.update(_speedups(timings["hf"], timings["polyformer"]))
    return result


def bench_generate(args) -> dict:
    transformers = _hf()
    size = dict(n_embd=64, n_layer=2, n_head=2, vocab_size=1000) if args.quick else dict(n_embd=768, n_layer=12, n_head=12)
    new_tokens = 16 if args.quick else args.new_tokens
    hf_config = transformers.GPT2Config(n_positions=1024, **size)
    torch.manual_seed(0)
    hf, ours = _pair(hf_config)
    hf.eval()
    ours.eval()
    hf.generation_config.eos_token_id = None  # always generate every token
    prompt = torch.randint(1, hf_config.vocab_size, (1, 16))
    mask = torch.ones_like(prompt)
    greedy = dict(do_sample=False, pad_token_id=0, attention_mask=mask)
    lookup = args.prompt_lookup
    runners = {
        "polyformer": lambda count: generate(ours, prompt, max_new_tokens=count).sequences,
        "hf": lambda count: hf.generate(prompt, max_new_tokens=count, min_new_tokens=count, **greedy),
    }
    if lookup:
        runners["polyformer_prompt_lookup"] = lambda count: generate(
            ours, prompt, max_new_tokens=count, prompt_lookup_tokens=lookup, prompt_lookup_ngram=3).sequences
        runners["hf_prompt_lookup"] = lambda count: hf.generate(
            prompt, max_new_tokens=count, min_new_tokens=count, prompt_lookup_num_tokens=lookup,
            max_matching_ngram_size=3, **greedy)
    outputs = {}

    def run(name, count=new_tokens):
        with torch.inference_mode():
            outputs[name] = runners[name](count)

    for name in runners:  # warm-up (a few tokens)
        run(name, 8)
    with tqdm(total=args.repeats, desc="generations (all variants)", disable=args.json) as bar:
        timings = time_interleaved({name: (lambda name=name: run(name)) for name in runners}, repeats=args.repeats,
                                   warmup=0, on_round=bar.update)
    result = {
        "benchmark": "gpt2_generate", "threads": torch.get_num_threads(), "batch": 1, "prompt_tokens": 16,
        "new_tokens": new_tokens, "config": {"layers": hf_config.n_layer, "d": hf_config.n_embd,
                                             "vocab": hf_config.vocab_size},
        "same_tokens": all(torch.equal(outputs["hf"], out) for out in outputs.values()),
        "hf_attention": hf.config._attn_implementation,
    }
    for name, t in timings.items():
        result[name] = {"s_best": round(t.best, 3), "s_median": round(t.median, 3),
                        "tokens_per_s_best": round(new_tokens / t.best, 2), "cpu_s_best": round(t.cpu_best, 3)}

    def ratio(slow, fast):
        return round(timings[slow].best / timings[fast].best, 3)

    result.update(_speedups(timings["hf"], timings["polyformer"]))
    if lookup:
        # the same exact-greedy technique on both sides, and polyformer's fast path against plain HF
        result["prompt_lookup_speedup_vs_hf_prompt_lookup"] = ratio("hf_prompt_lookup", "polyformer_prompt_lookup")
        result["prompt_lookup_speedup_vs_hf_plain"] = ratio("hf", "polyformer_prompt_lookup")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["train", "generate", "all"], default="all")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="training sequences per step")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per side")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast on both sides")
    parser.add_argument("--optimizer", choices=["default", "foreach", "fused"], default="default",
                        help="AdamW implementation, the same for both sides")
    parser.add_argument("--peak-gflops", type=float, default=None, help="peak for the FLOP utilisation")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed generations per side")
    parser.add_argument("--prompt-lookup", type=int, default=10,
                        help="also time greedy prompt-lookup speculation with this many guesses (0 = off)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = ["train", "generate"] if args.part == "all" else [args.part]
    for part in parts:
        result = bench_train(args) if part == "train" else bench_generate(args)
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(f"{result['benchmark']}: polyformer {result['polyformer']} | hf {result['hf']} | "
                  f"speed-up {result['speedup_best']}x (best), {result['speedup_median']}x (median)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
