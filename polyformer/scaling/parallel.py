"""Run independent batches of starts on several CPU threads, each with single-threaded torch.

The fitting tensors are small (hundreds of starts by hundreds of runs), so torch's own
intra-op threads spend more time synchronising than computing, and on a busy machine their
spin-waiting makes a fit tens of times slower. Instead, torch runs single-threaded and the
starts are split into shards that Python threads optimise side by side (torch releases the GIL
inside its kernels). Starts are independent, so the split does not change what is computed.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def single_threaded_torch() -> Iterator[None]:
    """Run the block with one torch intra-op thread; restore the previous setting after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


_MAX_DEFAULT_WORKERS = 8  # beyond this, Python-side overhead per shard outweighs the gain


def default_workers() -> int:
    """Threads to use: torch's configured thread count (OMP_NUM_THREADS / set_num_threads), at most 8."""
    return max(1, min(torch.get_num_threads(), _MAX_DEFAULT_WORKERS))


def map_threads(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(item) for item in items]`` on up to ``workers`` threads, in order, torch single-threaded."""
    with single_threaded_torch():
        if workers <= 1 or len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
            return list(pool.map(fn, items))


def shards(n: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices covering range(n) (fewer if n is small)."""
    parts = max(1, min(parts, n))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i + 1] > bounds[i]]
