"""``polyformer demo``: write the HTML report of the whole library."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="write an HTML report showing every part of the library")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="report folder (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="smallest sizes (seconds, for tests)")
    parser.add_argument("--only", nargs="*", help="build only these sections (module names)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from polyformer.demo import run_demo

    index = run_demo(args.out, quick=args.quick, only=args.only)
    print(f"report written to {index}")
    return 0
