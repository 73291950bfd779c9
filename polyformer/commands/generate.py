"""``polyformer generate``: continue a prompt with a language-model folder, printing as it goes."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="continue a prompt with a language model, streaming the text",
        description="Greedy by default; --temperature, --top-k or --top-p switch to sampling "
        "(--temperature 0 stays greedy). Example: polyformer generate --model gpt2-folder "
        "--prompt 'Once upon a time' --max-new-tokens 40 --top-p 0.9 --seed 1 --stop '\\n\\n'",
    )
    parser.add_argument("--model", type=Path, required=True,
                        help="folder with config.json, weights and tokenizer files")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--temperature", type=float, default=None, help="sample at this temperature (0 = greedy)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="sample from the smallest set with probability p")
    parser.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT",
                        help="stop when the text contains TEXT (repeatable; \\n is a newline)")
    parser.add_argument("--truncate", action="store_true",
                        help="keep the prompt's last tokens when it is longer than the context allows")
    parser.add_argument("--attention", default=None, help="run with another attention mechanism (e.g. sliding_window)")
    parser.add_argument("--prompt-lookup", type=int, default=0, metavar="N",
                        help="greedy only: guess up to N tokens per step from earlier text, checked in one call "
                        "(same output, faster when text repeats)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from polyformer.generation import TextStreamer, generate
    from polyformer.pipelines import pipeline

    kwargs = {"attention": args.attention} if args.attention else {}
    if kwargs:
        from polyformer.models import from_pretrained

        text_pipeline = pipeline("text-generation", model=from_pretrained(args.model, **kwargs), tokenizer=args.model)
    else:
        text_pipeline = pipeline("text-generation", model=args.model)
    tokenizer = text_pipeline.tokenizer
    stops = [s.replace("\\n", "\n").replace("\\t", "\t") for s in args.stop]  # typed "\n" -> newline
    sampling = args.temperature not in (None, 0) or args.top_k is not None or args.top_p is not None
    options = dict(
        max_new_tokens=args.max_new_tokens, do_sample=sampling, seed=args.seed, stop_strings=stops,
        truncate=args.truncate, top_k=args.top_k, top_p=args.top_p, prompt_lookup_tokens=args.prompt_lookup,
        temperature=args.temperature if sampling and args.temperature else 1.0,
    )
    batch = tokenizer(args.prompt)
    streamer = TextStreamer(lambda ids: tokenizer.decode(ids, skip_special_tokens=True), stops, prefix=args.prompt)
    generate(text_pipeline.model, batch["input_ids"], batch["attention_mask"], text_pipeline.defaults,
             decode=tokenizer.decode, streamer=streamer, **options)
    return 0
