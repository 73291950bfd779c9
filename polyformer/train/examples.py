"""Fixed-size examples (images, labelled sequences) drawn as a pure function of (seed, step).

The token-stream tasks draw random windows (:mod:`polyformer.train.batches`); tasks whose data
are whole examples draw them here. The global example stream is a sequence of epochs, each a
permutation of the examples keyed by ``(seed, epoch)``: step ``s`` takes stream positions
``[s * G, (s + 1) * G)`` with ``G = batch_size * grad_accum * world_size``, and process ``rank``
takes its slice of micro-batch ``micro`` as :class:`~polyformer.train.batches.WindowSampler`
does. A resumed run therefore draws exactly the same examples, and any split of the global batch
over processes and micro-batches draws the same union.

An :class:`ExampleSet` may carry an ``augment`` function (random shifts of digits, say), applied
to training batches only with a generator keyed by ``(seed, step, first)`` where ``first`` is the
batch's position in the global batch — again the same whatever the number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from polyformer.errors import DataError, ShapeError

Augment = Callable[[dict[str, Tensor], np.random.Generator], dict[str, Tensor]]


@dataclass
class ExampleSet:
    """Examples as tensors with a common first dimension: model ``inputs`` and ``labels``.

    ``inputs`` are the keyword arguments of the model's forward (``pixel_values`` (N, C, H, W),
    ``input_ids`` (N, T) ...); ``labels`` (N, ...) what the task's loss compares against.
    ``tokens_per_example``: what one example counts as in the ``tokens`` of metrics and in a
    sweep's D (None: the model family decides, e.g. a ViT's patches + 1).
    """

    inputs: dict[str, Tensor]
    labels: Tensor
    tokens_per_example: int | None = None
    augment: Augment | None = None

    def __post_init__(self) -> None:
        if not self.inputs:
            raise DataError("an example set needs at least one model input (e.g. pixel_values or input_ids)")
        count = len(self.labels)
        for name, value in self.inputs.items():
            if not isinstance(value, Tensor) or value.shape[:1] != (count,):
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ShapeError(f"example input {name!r} has shape {shape}; every input and the labels "
                                 f"({count} examples) must share the first dimension")
        if count == 0:
            raise DataError("the example set is empty; give at least one example")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: Tensor | np.ndarray) -> dict[str, Tensor]:
        """The examples at ``index`` as one batch: every input plus ``labels``."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return {**{k: v[index] for k, v in self.inputs.items()}, "labels": self.labels[index]}


class ExampleSampler:
    """Training batches of an :class:`ExampleSet`, keyed by (seed, step); epochs without replacement."""

    def __init__(self, examples: ExampleSet, batch_size: int, grad_accum: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        self.examples = examples
        self.batch_size = batch_size
        self.global_size = batch_size * grad_accum * world_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._orders: dict[int, np.ndarray] = {}  # the last epochs' permutations (a batch spans at most a few)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) >= 4:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))
        return self._orders[epoch]

    def positions(self, step: int) -> np.ndarray:
        """Example indices of the whole global batch of ``step`` (all processes, all micro-batches)."""
        n = len(self.examples)
        stream = np.arange(step * self.global_size, (step + 1) * self.global_size, dtype=np.int64)
        epochs = stream // n
        out = np.empty_like(stream)
        for epoch in np.unique(epochs):  # a batch spans at most a few epochs
            order = self._order(int(epoch))
            where = epochs == epoch
            out[where] = order[stream[where] - epoch * n]
        return out

    def batch(self, step: int, micro: int) -> dict[str, Tensor]:
        """This process's micro-batch ``micro`` of ``step``: the model inputs and ``labels``."""
        first = (micro * self.world_size + self.rank) * self.batch_size
        batch = self.examples.take(self.positions(step)[first : first + self.batch_size])
        if self.examples.augment is not None:
            batch = self.examples.augment(batch, np.random.default_rng([self.seed, step, first]))
        return batch


def eval_examples(count: int, wanted: int) -> np.ndarray:
    """Indices of the fixed evaluation examples: ``wanted`` of ``count`` (all when fewer), evenly spread."""
    take = max(1, min(count, wanted))
    return (np.arange(take) * count) // take


def example_batches(examples: ExampleSet, indices: np.ndarray, batch_size: int) -> Iterator[dict[str, Tensor]]:
    """Batches of the examples at ``indices``, in order (no augmentation: evaluation)."""
    for first in range(0, len(indices), batch_size):
        yield examples.take(indices[first : first + batch_size])


def describe_examples(examples: Any) -> str:
    """A short description for messages: count and input shapes."""
    if not isinstance(examples, ExampleSet):
        return type(examples).__name__
    shapes = ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in examples.inputs.items())
    return f"{len(examples)} examples ({shapes})"
