"""Small data and configs shared by the trainer tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from polyformer.data.tokens import write_tokens
from polyformer.train import ModelSpec, TrainConfig

VOCAB = 64
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


def learnable_tokens(n: int, seed: int) -> np.ndarray:
    """A noisy cycle: token t+1 usually follows t, so a model can learn and the loss falls."""
    rng = np.random.default_rng(seed)
    tokens = np.empty(n, dtype=np.int64)
    tokens[0] = 0
    noise = rng.random(n) < 0.2
    jumps = rng.integers(0, VOCAB, size=n)
    for i in range(1, n):
        tokens[i] = jumps[i] if noise[i] else (tokens[i - 1] + 1) % VOCAB
    return tokens


def make_data(folder: Path) -> Path:
    """A prepared-style folder (train.bin, val.bin) of learnable tokens."""
    write_tokens(folder / "train.bin", learnable_tokens(20_000, 0), VOCAB, split="train")
    write_tokens(folder / "val.bin", learnable_tokens(2_000, 1), VOCAB, split="val")
    return folder


def tiny_spec(dropout: float = 0.0) -> ModelSpec:
    return ModelSpec("_tiny_lm:build", {"d_model": 32, "n_heads": 2, "n_layers": 2, "n_positions": 32,
                                        "dropout": dropout})


def tiny_config(out_dir: Path, **overrides) -> TrainConfig:
    values = dict(total_steps=20, batch_size=4, seq_len=16, lr=3e-3, warmup_steps=3, eval_interval=5,
                  eval_tokens=256, checkpoint_interval=5, progress=False, out_dir=str(out_dir))
    values.update(overrides)
    return TrainConfig(**values)


def subprocess_env() -> dict[str, str]:
    """Single-threaded, deterministic children that can import polyformer and the tiny model."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    return env


def kill_test_sweep(data: str, store: str) -> None:
    """The two-run sweep that tests/test_sweep.py kills and resumes (run in a child and in-process)."""
    import dataclasses

    from polyformer.scaling.sweep import ModelSize, quick_plan, run_sweep

    plan = dataclasses.replace(quick_plan(), family="_tiny_lm:build_sized", seq_len=16, tokens_per_param=None,
                               tokens=[10_000], sizes=(ModelSize(1, 16, 2), ModelSize(2, 32, 2)), evals_per_run=5)
    run_sweep(plan, data, store, sweep="k", progress=False, log=lambda s: None)
