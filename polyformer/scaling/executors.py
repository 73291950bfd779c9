"""Where a sweep's trials run: this process (the default), or the workers of a Ray cluster.

A :class:`Trial` is a plain, picklable description of one run — its model spec, training config
and the name of its data — and :func:`run_trial` turns it into a :class:`TrialOutcome` (final
validation loss, loss curve, seconds, or the error). Workers only train and return outcomes; the
sweep's driver alone writes the run store, so a store never sees two writers.

* ``local`` — trials one after another in this process (checkpoints and exact resume as before);
* ``ray`` — one Ray task per trial, ``workers`` at a time (``pip install 'polyformer[ray]'``); an
  existing ``ray.init()`` (a cluster address) is used as it is, else a local Ray instance with
  ``workers`` CPUs is started. Every worker reads the data itself: put token folders on a file
  system the workers share.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from polyformer.errors import ConfigError
from polyformer.train import ModelSpec, TrainConfig, train
from polyformer.train.data import load_task_data
from polyformer.train.metrics import read_metrics

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Trial:
    """One run of a sweep, as plain data (it crosses process boundaries)."""

    name: str
    spec: dict[str, Any]  # ModelSpec.to_dict()
    train: dict[str, Any]  # TrainConfig.to_dict()
    data: str
    data_options: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrialOutcome:
    """What a worker returns: the final loss and curve of a finished run, or its error."""

    final_val_loss: float | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


_DATA_CACHE: dict[str, Any] = {}  # data loaded once per worker process, shared by its trials


def trial_data(task: str, data: str, options: dict[str, Any]) -> Any:
    """The :class:`~polyformer.train.data.TaskData` of a trial (cached in this process)."""
    key = json.dumps([task, data, options], sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_task_data(task, data, options)
    return _DATA_CACHE[key]


def curve_from_metrics(path: Path) -> list[dict[str, Any]]:
    """The store's curve rows from a run's metrics.jsonl (train losses per step, eval losses)."""
    points = []
    for record in read_metrics(path):
        if record.get("kind") == "train":
            points.append({"step": record["step"], "kind": "train", "tokens": record["tokens"],
                           "loss": record["loss"], "lr": record.get("lr")})
        elif record.get("kind") == "eval":
            points.append({"step": record["step"], "kind": "eval", "tokens": record["tokens"],
                           "loss": record["val_loss"], "lr": None})
    return points


def run_trial(trial: Trial, progress: bool = False) -> TrialOutcome:
    """Train one trial (resuming from its checkpoints when it has some); never raises for a failed run."""

    try:
        spec = ModelSpec.from_dict(trial.spec)
        config = TrainConfig.from_dict({**trial.train, "progress": progress})
        data = trial_data(spec.task_name, trial.data, trial.data_options)
        result = train(spec, data.train, data.val, data.size, config, resume=True, run_info=trial.run_info)
        curve = curve_from_metrics(Path(config.out_dir) / "metrics.jsonl")
        return TrialOutcome(result.final_val_loss, curve, result.seconds, dict(result.metrics))
    except Exception as error:  # noqa: BLE001 - the driver records the failure and the sweep goes on
        detail = traceback.format_exception_only(type(error), error)[-1].strip()
        return TrialOutcome(error=detail)


class Executor(Protocol):
    """Runs trials; yields each with its outcome as it finishes (in any order)."""

    name: str

    def run(self, trials: Sequence[Trial], started: Callable[[Trial], None]) -> Iterator[tuple[Trial, TrialOutcome]]:
        ...


class LocalExecutor:
    """Trials one after another in this process."""

    name = "local"

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def run(self, trials: Sequence[Trial], started: Callable[[Trial], None]) -> Iterator[tuple[Trial, TrialOutcome]]:
        for trial in trials:
            started(trial)
            yield trial, run_trial(trial, progress=self.progress)


def _ray_trial(trial_fields: dict[str, Any]) -> dict[str, Any]:
    """What a Ray worker runs: one trial, single-threaded torch (each worker holds one CPU)."""
    import torch

    torch.set_num_threads(1)
    return asdict(run_trial(Trial(**trial_fields)))


class RayExecutor:
    """One Ray task per trial, each holding one CPU; ``workers`` trials at a time."""

    name = "ray"

    def __init__(self, workers: int = 2, address: str | None = None) -> None:
        self.ray = require_ray()
        if workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.address = address

    def run(self, trials: Sequence[Trial], started: Callable[[Trial], None]) -> Iterator[tuple[Trial, TrialOutcome]]:
        ray = self.ray
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address)
            else:
                # local workers import what this process imports (user families on sys.path too)
                paths = os.pathsep.join(p for p in sys.path if p)
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": paths}})
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_trial)
        waiting = list(trials)
        running: dict[Any, Trial] = {}
        while waiting or running:
            while waiting and len(running) < self.workers:
                trial = waiting.pop(0)
                started(trial)
                running[remote.remote(asdict(trial))] = trial
            done, _ = ray.wait(list(running), num_returns=1)
            trial = running.pop(done[0])
            began = time.perf_counter()
            try:
                outcome = TrialOutcome(**ray.get(done[0]))
            except Exception as error:  # noqa: BLE001 - a worker that died: recorded as the trial's failure
                outcome = TrialOutcome(error=f"{type(error).__name__}: {error}", seconds=time.perf_counter() - began)
            yield trial, outcome


def require_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray, which is not installed; install it with "
                          "pip install 'polyformer[ray]' (or pip install ray)") from None
    return ray


def make_executor(name: str = "local", workers: int = 2, progress: bool = True, address: str | None = None) -> Executor:
    """The executor ``name`` (``local`` or ``ray``)."""
    if name == "local":
        return LocalExecutor(progress=progress)
    if name == "ray":
        return RayExecutor(workers=workers, address=address)
    raise ConfigError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
