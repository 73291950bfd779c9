"""``polyformer attention list | show | bench``."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from polyformer.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("attention", help="list, draw and benchmark attention mechanisms")
    sub = parser.add_subparsers(dest="attention_command", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="every registered mechanism with its options")
    listing.set_defaults(func=run_list)

    show = sub.add_parser(
        "show",
        help="draw the mask of a pattern-based mechanism",
        description="Draw a pattern. Mechanism options follow as --name value, e.g. "
        "`polyformer attention show longformer --window 8 --global-tokens 0,1 --n 64 -o lf.png`.",
    )
    show.add_argument("name", help="a pattern-based mechanism (see `polyformer attention list`)")
    show.add_argument("--n", type=int, default=64, help="sequence length to draw (default 64)")
    show.add_argument("--heads", type=int, default=1, help="draw this many heads of per-head patterns")
    show.add_argument("--causal", action="store_true", help="intersect with the causal mask")
    show.add_argument("-o", "--out", type=Path, default=None, help="PNG path (default NAME.png)")
    show.set_defaults(func=run_show, accepts_mechanism_options=True)

    bench = sub.add_parser("bench", help="time and peak memory against dense SDPA in the same run")
    bench.add_argument("--n", type=int, nargs="+", default=[1024, 4096, 16384, 65536], help="sequence lengths")
    bench.add_argument("--pass", dest="passes", nargs="+", default=["forward", "forward+backward"],
                       choices=["forward", "forward+backward"])
    bench.add_argument("--only", nargs="+", default=None, help="run only cases whose label contains one of these")
    bench.add_argument("--threads", type=int, default=2)
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--max-dense-n", type=int, default=16384, help="largest N for dense baselines")
    bench.add_argument("--no-hf", action="store_true", help="skip the Hugging Face rows")
    bench.add_argument("--json", action="store_true", help="print one JSON record per line")
    bench.add_argument("--plot", type=Path, default=None, help="draw time and memory curves to this PNG")
    bench.set_defaults(func=run_bench)


def run_list(args: argparse.Namespace) -> int:
    from polyformer import attention

    for name in attention.list():
        cls = attention.mechanism_class(name)
        fields = [f"{f.name}={_default(f)!r}" for f in dataclasses.fields(cls.Options)]
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:16s} {summary}")
        if fields:
            print(f"{'':16s} options: {', '.join(fields)}")
    return 0


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def parse_mechanism_options(name: str, extra: list[str]) -> dict[str, Any]:
    """Turn ``--window 8 --global-tokens 0,1`` into typed options of mechanism ``name``."""
    from polyformer import attention

    cls = attention.mechanism_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    hints = typing.get_type_hints(cls.Options)
    options: dict[str, Any] = {}
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or i + 1 >= len(extra):
            raise ConfigError(f"expected `--option value` pairs after the mechanism name, got {token!r}")
        key = token[2:].replace("-", "_")
        if key not in fields:
            raise ConfigError(f"attention {name!r}: unknown option --{token[2:]}; valid options: "
                              + ", ".join("--" + f.replace("_", "-") for f in fields))
        options[key] = _convert(extra[i + 1], hints[key], key)
        i += 2
    return options


def _convert(text: str, hint: Any, key: str) -> Any:
    """Convert a command-line value to the annotated type (int, bool, str, tuple of ints, unions)."""
    args = typing.get_args(hint)
    if "," in text or hint is tuple or typing.get_origin(hint) is tuple or (tuple in map(typing.get_origin, args)):
        try:
            return tuple(int(part) for part in text.split(",") if part != "")
        except ValueError:
            raise ConfigError(f"--{key} expects comma-separated integers, got {text!r}") from None
    if hint is bool:
        return text.lower() in ("1", "true", "yes", "on")
    candidates = [hint] if not args else [a for a in args if a is not type(None)]
    for kind in (int, float, str):
        if kind in candidates:
            try:
                return kind(text)
            except ValueError:
                continue
    if text == "none" and type(None) in args:
        return None
    raise ConfigError(f"--{key}: cannot read {text!r} as {hint}")


def run_show(args: argparse.Namespace) -> int:
    from polyformer import attention
    from polyformer.attention.patterns import Causal
    from polyformer.attention.pictures import draw_pattern

    options = parse_mechanism_options(args.name, args.mechanism_options)
    mechanism = attention.build(args.name, **options)
    pattern = getattr(mechanism, "pattern", None)
    if pattern is None:
        from polyformer.attention.sparse import PatternAttention

        patterned = [n for n in attention.list() if issubclass(attention.mechanism_class(n), PatternAttention)]
        raise ConfigError(f"attention {args.name!r} has no sparse pattern to draw; pattern-based mechanisms: "
                          + ", ".join(patterned))
    if args.causal:
        pattern = pattern & Causal()
    out = args.out or Path(f"{args.name}.png")
    draw_pattern(pattern, args.n, out, heads=args.heads)
    print(f"{pattern.label} at N={args.n} drawn to {out}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from polyformer.bench.attention import default_cases, format_table, plot_records, records_to_json_lines
    from polyformer.bench.attention import run_bench as bench

    cases = default_cases(args.max_dense_n, hf=not args.no_hf)
    if args.only:
        wanted = [c for c in cases if any(word in c.label for word in args.only)]
        needed = {c.baseline for c in wanted if c.baseline}
        cases = [c for c in cases if c in wanted or c.label in needed]
    records = bench(cases, args.n, args.passes, threads=args.threads, repeats=args.repeats)
    print(records_to_json_lines(records) if args.json else format_table(records))
    if args.plot:
        print(f"curves drawn to {plot_records(records, args.plot)}")
    return 0
