"""The training loop: AdamW, warmup + cosine, clipping, accumulation, bf16, eval, checkpoints, DDP.

Exact resume: a checkpoint holds the weights, the optimiser state, the step and every process's
RNG states; the learning rate and the batches are pure functions of the step (and the seed), so a
run killed at any moment and resumed from its last checkpoint writes the same losses, step for
step, as a run that was never interrupted (bit for bit with deterministic single-thread math).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polyformer.errors import CheckpointError, ConfigError, DataError
from polyformer.files import atomic_write_text
from polyformer.train import distributed as D
from polyformer.train.checkpoint import Checkpoint, find_resumable, load_checkpoint, save_checkpoint
from polyformer.train.config import TrainConfig, resume_mismatches
from polyformer.train.metrics import MetricsLog
from polyformer.train.models import ModelSpec, build_model, no_decay_names, tokens_per_example
from polyformer.train.optim import build_optimizer
from polyformer.train.rng import capture_rng, restore_rng
from polyformer.train.schedule import learning_rate
from polyformer.train.tasks import Task, finish_sums, make_task


@dataclass
class TrainResult:
    """What a finished run reports."""

    out_dir: Path
    steps: int
    tokens: int  # tokens fed to the model over the whole run
    final_val_loss: float
    resumed_from: int  # step of the checkpoint the run resumed from (0: started fresh)
    seconds: float  # wall time of the whole run, summed over resumptions
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation (val_loss, val_accuracy ...)
    model: nn.Module | None = field(default=None, repr=False)  # the trained model (set by :func:`train`)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Trainer:
    """Trains ``model`` on ``train_data`` with its task; evaluates on fixed batches of ``val_data``.

    ``train_data`` / ``val_data`` are what the task reads: token arrays for ``next-token`` and
    ``masked-lm``, :class:`~polyformer.train.examples.ExampleSet` for ``classification`` and
    ``next-pixel``. ``task`` defaults to the task of ``model_spec``'s family (``next-token``
    without a spec). Build the model after :func:`seed_everything` (``config.seed``) on every
    process, so all processes start from the same weights; :func:`train` does both.
    """

    def __init__(self, model: nn.Module, train_data: Any, val_data: Any, config: TrainConfig,
                 model_spec: ModelSpec | None = None, dist_info: D.DistInfo | None = None,
                 run_info: dict[str, Any] | None = None, task: Task | None = None) -> None:
        self.config = config
        self.model = model
        self.spec = model_spec
        self.dist = dist_info or D.DistInfo()
        self.run_info = dict(run_info or {})
        self.task = task if task is not None else _default_task(model_spec)
        self.train_data = train_data
        self.val_data = val_data
        self.out_dir = Path(config.out_dir)
        self.checkpoints = self.out_dir / "checkpoints"
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl", enabled=self.dist.is_main)
        self.sampler = self.task.sampler(train_data, config, self.dist.rank, self.dist.world_size)
        # a validation split too small for one batch is refused now, not after training
        next(iter(self.task.eval_batches(val_data, config, self.dist.rank, self.dist.world_size)), None)
        self.optimizer = build_optimizer(model, config, no_decay_names(model_spec))
        per_example = self.task.tokens_per_example(train_data, config)
        if per_example is None and model_spec is not None:
            per_example = tokens_per_example(model_spec, model)
        self.tokens_per_example = int(per_example or 1)
        self.tokens_per_step = (config.batch_size * config.grad_accum * self.dist.world_size
                                * self.tokens_per_example)
        self.last_eval: dict[str, float] = {}

    # ----- public ------------------------------------------------------------------------------
    def fit(self, resume: bool = True, stop_after: int | None = None,
            time_budget_s: float | None = None) -> TrainResult:
        """Train to ``total_steps``, resuming from the newest good checkpoint when ``resume``.

        ``stop_after`` ends this session early after that step, with a checkpoint there (a time
        slice of a longer run; running ``fit`` again continues it exactly). ``time_budget_s``
        does the same after the first step that ends past that many seconds of this session.
        """
        config = self.config
        # Each process continues its own stream for dropout; batches do not use these generators.
        seed_everything(config.seed * 1_000_003 + 1 + self.dist.rank)
        checkpoint = self._resume_point(resume)
        start, elapsed = 0, 0.0
        if checkpoint is not None:
            start, elapsed = self._load(checkpoint)
        self.metrics.truncate_after(start)
        if self.dist.is_main:
            self._write_run_config()
        model = self._wrapped()
        model.train()
        val_loss = math.nan
        began = time.perf_counter() - elapsed
        bar = _progress(config, start, self.dist.is_main)
        session = time.perf_counter()
        try:
            last = config.total_steps if stop_after is None else min(config.total_steps, stop_after)
            for step in range(start, last):
                record = self._train_step(model, step)
                done = step + 1
                record.update(step=done, tokens=done * self.tokens_per_step, elapsed=time.perf_counter() - began)
                self.metrics.write({"kind": "train", **record})
                # Every process decides together (rank 0's clock) whether the budget is spent.
                out_of_time = time_budget_s is not None and bool(D.broadcast_object(
                    time.perf_counter() - session > time_budget_s, self.dist))
                if _due(done, config.eval_interval, config.total_steps):
                    val_loss = self.evaluate()
                    self.metrics.write({"kind": "eval", "step": done, "tokens": done * self.tokens_per_step,
                                        **self.last_eval})
                if (_due(done, config.checkpoint_interval, config.total_steps) or done == stop_after
                        or out_of_time):
                    self._save(done, time.perf_counter() - began)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", val=f"{val_loss:.4f}", refresh=False)
                if out_of_time:
                    last = done
                    break
        finally:
            bar.close()
            self.metrics.close()
        if math.isnan(val_loss):  # resumed a finished run, or stopped between evaluations
            val_loss = self.evaluate()
        steps = max(start, last)
        return TrainResult(self.out_dir, steps, steps * self.tokens_per_step, val_loss, start,
                           time.perf_counter() - began, dict(self.last_eval))

    @torch.no_grad()
    def evaluate(self) -> float:
        """The task's mean validation loss over the fixed validation batches (shared out among
        processes); :attr:`last_eval` also holds the task's other metrics (``val_accuracy`` ...)."""
        was_training = self.model.training
        self.model.eval()
        # (loss sum, count, correct, batches that counted correct answers): the same on every rank
        total = torch.zeros(4, dtype=torch.float64)
        for batch in self.task.eval_batches(self.val_data, self.config, self.dist.rank, self.dist.world_size):
            with self._autocast():
                sums = self.task.eval_sums(self.model, batch)
            total += torch.tensor([sums["loss"], sums["count"], sums.get("correct", 0.0), "correct" in sums],
                                  dtype=torch.float64)
        total = D.all_reduce_sum(total, self.dist)
        self.model.train(was_training)
        sums = {"loss": float(total[0]), "count": float(total[1])}
        if total[3] > 0:
            sums["correct"] = float(total[2])
        self.last_eval = finish_sums(sums)
        return self.last_eval["val_loss"]

    # ----- one step ----------------------------------------------------------------------------
    def _train_step(self, model: nn.Module, step: int) -> dict[str, float]:
        config = self.config
        lr = learning_rate(step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), dtype=torch.float64)
        for micro in range(config.grad_accum):
            batch = self.sampler.batch(step, micro)
            # Gradients are all-reduced only on the last micro-batch of the step.
            sync = micro == config.grad_accum - 1 or not self.dist.enabled
            with (contextlib.nullcontext() if sync else model.no_sync()):
                with self._autocast():
                    loss = self.task.loss(model, batch)
                if not torch.isfinite(loss):
                    raise DataError(f"the training loss became {float(loss)} at step {step + 1}; "
                                    "lower lr or enable clipping (clip > 0)")
                (loss / config.grad_accum).backward()
            loss_sum += loss.detach().double()
        max_norm = config.clip if config.clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if hasattr(self.task, "after_step"):  # e.g. CLIP's temperature clamp (tasks.py)
            self.task.after_step(self.model)
        mean_loss = D.all_reduce_sum(loss_sum / config.grad_accum, self.dist) / self.dist.world_size
        return {"loss": float(mean_loss), "lr": lr, "grad_norm": float(grad_norm)}

    def _autocast(self):
        if self.config.bf16:
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _wrapped(self) -> nn.Module:
        if not self.dist.enabled:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(self.model)

    # ----- checkpoints -------------------------------------------------------------------------
    def _resume_point(self, resume: bool) -> Checkpoint | None:
        path = None
        if self.dist.is_main:
            found = resume_point(self.out_dir, self.config, self.spec, self.dist.world_size, resume)
            path = None if found is None else str(found.path)
        path = D.broadcast_object(path, self.dist)
        if path is None:
            return None
        state = json.loads((Path(path) / "state.json").read_text())
        return Checkpoint(Path(path), int(state["step"]), state)

    def _load(self, checkpoint: Checkpoint) -> tuple[int, float]:
        state = checkpoint.state
        load_checkpoint(checkpoint, self.model, self.optimizer)
        restore_rng(state["rng"][self.dist.rank])
        return checkpoint.step, float(state.get("elapsed", 0.0))

    def _save(self, step: int, elapsed: float) -> None:
        rng = D.gather_objects(capture_rng(), self.dist)
        if self.dist.is_main:
            self.metrics.sync()  # the log up to this step is durable before the checkpoint is
            state = {
                "train": self.config.to_dict(),
                "model": None if self.spec is None else self.spec.to_dict(),
                "world_size": self.dist.world_size,
                "rng": rng,
                "elapsed": elapsed,
                "tokens": step * self.tokens_per_step,
            }
            save_checkpoint(self.checkpoints, step, self.model, self.optimizer, state, self.config.keep_checkpoints)
        D.barrier(self.dist)

    def _write_run_config(self) -> None:
        record = {"train": self.config.to_dict(), "model": None if self.spec is None else self.spec.to_dict(),
                  "world_size": self.dist.world_size, **self.run_info}
        atomic_write_text(self.out_dir / "config.json", json.dumps(record, indent=1) + "\n")


def _due(step: int, interval: int, total: int) -> bool:
    return step == total or (interval > 0 and step % interval == 0)


def _progress(config: TrainConfig, start: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=config.total_steps, initial=start, disable=not (enabled and config.progress),
                desc=f"train {Path(config.out_dir).name}", unit="step", dynamic_ncols=True, leave=False)


def _default_task(spec: ModelSpec | None, vocab_size: int | None = None) -> Task:
    if spec is None:
        return make_task("next-token")
    return make_task(spec.task_name, spec.task_options, vocab_size)


def train(spec: ModelSpec, train_data: Any, val_data: Any, vocab_size: int | None, config: TrainConfig,
          dist_info: D.DistInfo | None = None, resume: bool = True,
          run_info: dict[str, Any] | None = None, time_budget_s: float | None = None) -> TrainResult:
    """Build the model of ``spec`` from ``config.seed`` and train it on its family's task
    (resuming when possible). ``vocab_size``: the size the data decides (vocabulary or classes).
    The trained model is :attr:`TrainResult.model`."""
    seed_everything(config.seed)
    model = build_model(spec, vocab_size)
    trainer = Trainer(model, train_data, val_data, config, spec, dist_info, run_info,
                      task=_default_task(spec, vocab_size))
    result = trainer.fit(resume=resume, time_budget_s=time_budget_s)
    result.model = model
    return result


def resume_point(out_dir: str | Path, config: TrainConfig, spec: ModelSpec | None, world_size: int,
                 resume: bool = True) -> Checkpoint | None:
    """The verified checkpoint a run in ``out_dir`` continues from (None: it starts afresh).

    Refuses, with the reason and the fix, a used ``out_dir`` when ``resume`` is off and a checkpoint
    made with another training config, model or number of processes. ``polyformer train`` calls it
    before starting torchrun workers, so that a refusal is one clear message, not a worker's trace.
    """
    checkpoints = Path(out_dir) / "checkpoints"
    if not resume:
        if any(checkpoints.glob("step-*")):
            raise ConfigError(f"{str(out_dir)!r} already holds checkpoints of a run; resume it, or "
                              "train into a new out_dir")
        return None
    found = find_resumable(checkpoints)
    if found is None:
        return None
    state = found.state
    mismatches = resume_mismatches(state.get("train", {}), config)
    if mismatches:
        raise CheckpointError(
            f"cannot resume {str(found.path)!r}: the training config differs in {', '.join(mismatches)}; "
            "resume with the same settings or train into a new out_dir"
        )
    if spec is not None and state.get("model") not in (None, spec.to_dict()):
        raise CheckpointError(f"cannot resume {str(found.path)!r}: it was made with model {state.get('model')}, "
                              f"not {spec.to_dict()}; use the same model or a new out_dir")
    if int(state.get("world_size", 1)) != world_size:
        raise CheckpointError(f"cannot resume {str(found.path)!r}: it was written by {state.get('world_size')} "
                              f"processes, this run has {world_size}; resume with the same --nproc")
    return found
