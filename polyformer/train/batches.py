"""Batches drawn as a pure function of (seed, step): a resumed run draws exactly the same ones.

The global batch of step ``s`` is ``batch_size * grad_accum * world_size`` windows of ``seq_len``
tokens whose start offsets come from a random generator keyed by ``(seed, s)``. Process ``rank``
takes windows ``[(micro * world_size + rank) * batch_size, ... + batch_size)`` for micro-batch
``micro``, so the union over processes and micro-batches is the same global batch whatever the
number of processes — which is what makes data-parallel training equal to one process.
"""

from __future__ import annotations

import numpy as np
import torch

from polyformer.errors import DataError


class WindowSampler:
    """Random windows of a token array for training, keyed by (seed, step)."""

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, grad_accum: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if len(tokens) < seq_len:
            raise DataError(f"the training split has {len(tokens)} tokens, fewer than seq_len={seq_len}; "
                            "use a shorter seq_len or a larger corpus")
        self.tokens = tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def offsets(self, step: int) -> np.ndarray:
        """Start offsets of the whole global batch of ``step`` (all processes, all micro-batches)."""
        count = self.batch_size * self.grad_accum * self.world_size
        generator = np.random.default_rng([self.seed, step])
        return generator.integers(0, len(self.tokens) - self.seq_len + 1, size=count)

    def batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        """This process's micro-batch ``micro`` of ``step``: ``input_ids`` and ``labels`` (B, T)."""
        first = (micro * self.world_size + self.rank) * self.batch_size
        starts = self.offsets(step)[first : first + self.batch_size]
        ids = read_windows(self.tokens, starts, self.seq_len)
        return {"input_ids": ids, "labels": ids}


def read_windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> torch.Tensor:
    """Windows ``tokens[s : s + seq_len]`` for each start, as int64 (B, T)."""
    rows = np.stack([np.asarray(tokens[s : s + seq_len], dtype=np.int64) for s in starts])
    return torch.from_numpy(rows)


def eval_windows(n_tokens: int, seq_len: int, eval_tokens: int) -> np.ndarray:
    """Start offsets of the fixed validation windows: non-overlapping, evenly spread over the split.

    The same windows are used at every evaluation and by every model, so losses compare without
    sampling noise between them.
    """
    if n_tokens < seq_len:
        raise DataError(f"the validation split has {n_tokens} tokens, fewer than seq_len={seq_len}; "
                        "use a shorter seq_len or a larger val_fraction")
    available = n_tokens // seq_len
    count = max(1, min(available, eval_tokens // seq_len))
    # Evenly spaced window indices over the whole split.
    index = (np.arange(count) * available) // count
    return index * seq_len
