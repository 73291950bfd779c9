"""The ``polyformer`` command. Each sub-command lives in its own module under ``polyformer.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys

from polyformer.errors import PolyformerError

# Each module defines ``add_parser(subparsers)``; the parser it adds sets ``func(args) -> int``.
COMMAND_MODULES = (
    "polyformer.commands.attention",
    "polyformer.commands.demo",
    "polyformer.commands.generate",
    "polyformer.commands.scaling",
    "polyformer.commands.data",
    "polyformer.commands.train",
    "polyformer.commands.vision",
    "polyformer.commands.text",
    "polyformer.commands.clip",
    "polyformer.commands.video",
    "polyformer.commands.table",
    "polyformer.commands.models",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (all sub-commands)."""
    parser = argparse.ArgumentParser(
        prog="polyformer",
        description="Transformers along three axes: scaling laws, efficient attention, beyond text.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_mechanism_options", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.mechanism_options = extra
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PolyformerError as error:
        # Errors raised on purpose carry a message that names the problem and the fix.
        print(f"polyformer {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
