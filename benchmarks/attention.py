"""Attention benchmark: every mechanism against dense SDPA in the same run (JSON lines + curves).

    python benchmarks/attention.py --json --plot runs/bench/attention.png
    python benchmarks/attention.py --n 16384 --only sliding bigbird longformer

Same options as `polyformer attention bench`.
"""

import sys

from polyformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["attention", "bench", *sys.argv[1:]]))
