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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polyformer.errors import CheckpointError, ConfigError, DataError
from polyformer.files import atomic_write_text
from polyformer.train import distributed as D
from polyformer.train.batches import WindowSampler, eval_windows, read_windows
from polyformer.train.checkpoint import Checkpoint, find_resumable, load_checkpoint, save_checkpoint
from polyformer.train.config import TrainConfig, resume_mismatches
from polyformer.train.metrics import MetricsLog
from polyformer.train.models import ModelSpec, build_model
from polyformer.train.optim import build_optimizer
from polyformer.train.rng import capture_rng, restore_rng
from polyformer.train.schedule import learning_rate


@dataclass
class TrainResult:
    """What a finished run reports."""

    out_dir: Path
    steps: int
    tokens: int  # tokens fed to the model over the whole run
    final_val_loss: float
    resumed_from: int  # step of the checkpoint the run resumed from (0: started fresh)
    seconds: float  # wall time of the whole run, summed over resumptions


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Trainer:
    """Trains ``model`` on random windows of ``train_tokens``; evaluates on fixed windows of ``val_tokens``.

    Build the model after :func:`seed_everything` (``config.seed``) on every process, so all
    processes start from the same weights; :func:`train` does both.
    """

    def __init__(self, model: nn.Module, train_tokens: np.ndarray, val_tokens: np.ndarray, config: TrainConfig,
                 model_spec: ModelSpec | None = None, dist_info: D.DistInfo | None = None,
                 run_info: dict[str, Any] | None = None) -> None:
        self.config = config
        self.model = model
        self.spec = model_spec
        self.dist = dist_info or D.DistInfo()
        self.run_info = dict(run_info or {})
        self.train_tokens = train_tokens
        self.val_tokens = val_tokens
        self.out_dir = Path(config.out_dir)
        self.checkpoints = self.out_dir / "checkpoints"
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl", enabled=self.dist.is_main)
        self.sampler = WindowSampler(train_tokens, config.seq_len, config.batch_size, config.grad_accum,
                                     config.seed, self.dist.rank, self.dist.world_size)
        self.eval_starts = eval_windows(len(val_tokens), config.seq_len, config.eval_tokens)
        self.optimizer = build_optimizer(model, config)
        self.tokens_per_step = config.tokens_per_step(self.dist.world_size)

    # ----- public ------------------------------------------------------------------------------
    def fit(self, resume: bool = True, stop_after: int | None = None) -> TrainResult:
        """Train to ``total_steps``, resuming from the newest good checkpoint when ``resume``.

        ``stop_after`` ends this session early after that step, with a checkpoint there (a time
        slice of a longer run; running ``fit`` again continues it exactly).
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
        try:
            last = config.total_steps if stop_after is None else min(config.total_steps, stop_after)
            for step in range(start, last):
                record = self._train_step(model, step)
                done = step + 1
                record.update(step=done, tokens=done * self.tokens_per_step, elapsed=time.perf_counter() - began)
                self.metrics.write({"kind": "train", **record})
                if _due(done, config.eval_interval, config.total_steps):
                    val_loss = self.evaluate()
                    self.metrics.write({"kind": "eval", "step": done, "tokens": done * self.tokens_per_step,
                                        "val_loss": val_loss})
                if _due(done, config.checkpoint_interval, config.total_steps) or done == stop_after:
                    self._save(done, time.perf_counter() - began)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", val=f"{val_loss:.4f}", refresh=False)
        finally:
            bar.close()
            self.metrics.close()
        if math.isnan(val_loss):  # resumed a finished run, or stopped between evaluations
            val_loss = self.evaluate()
        steps = max(start, last)
        return TrainResult(self.out_dir, steps, steps * self.tokens_per_step, val_loss, start,
                           time.perf_counter() - began)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean next-token loss over the fixed validation windows (shared out among processes)."""
        was_training = self.model.training
        self.model.eval()
        mine = self.eval_starts[self.dist.rank :: self.dist.world_size]
        total = torch.zeros(2, dtype=torch.float64)  # (sum of window losses, window count)
        for first in range(0, len(mine), self.config.batch_size):
            starts = mine[first : first + self.config.batch_size]
            ids = read_windows(self.val_tokens, starts, self.config.seq_len)
            with self._autocast():
                loss = self.model(input_ids=ids, labels=ids).loss
            total += torch.tensor([float(loss) * len(starts), len(starts)], dtype=torch.float64)
        total = D.all_reduce_sum(total, self.dist)
        self.model.train(was_training)
        return float(total[0] / total[1])

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
                    loss = model(**batch).loss
                if not torch.isfinite(loss):
                    raise DataError(f"the training loss became {float(loss)} at step {step + 1}; "
                                    "lower lr or enable clipping (clip > 0)")
                (loss / config.grad_accum).backward()
            loss_sum += loss.detach().double()
        max_norm = config.clip if config.clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
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


def train(spec: ModelSpec, train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int, config: TrainConfig,
          dist_info: D.DistInfo | None = None, resume: bool = True,
          run_info: dict[str, Any] | None = None) -> TrainResult:
    """Build the model of ``spec`` from ``config.seed`` and train it (resuming when possible)."""
    seed_everything(config.seed)
    model = build_model(spec, vocab_size)
    trainer = Trainer(model, train_tokens, val_tokens, config, spec, dist_info, run_info)
    return trainer.fit(resume=resume)


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
