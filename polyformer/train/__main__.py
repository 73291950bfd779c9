"""``python -m polyformer.train LAUNCH.json``: one training process (what torchrun starts per rank)."""

from __future__ import annotations

import os
import sys

from polyformer.errors import PolyformerError


def main(argv: list[str] | None = None) -> int:
    from polyformer.train.launch import read_launch, run_launch

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m polyformer.train LAUNCH.json  (written by `polyformer train lm`)", file=sys.stderr)
        return 2
    try:
        result = run_launch(read_launch(argv[0]))
    except PolyformerError as error:
        print(f"polyformer train: error: {error}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        print(f"final validation loss {result.final_val_loss:.4f} after {result.steps} steps ({result.tokens:,} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
