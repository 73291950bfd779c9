"""Exact resume: a run killed with SIGKILL and resumed writes the same losses as an uninterrupted
run; corrupt or truncated checkpoints are refused and the previous good one is used."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from _train_helpers import VOCAB, learnable_tokens, make_data, subprocess_env, tiny_config, tiny_spec
from polyformer.errors import CheckpointError
from polyformer.train import Trainer, build_model, seed_everything
from polyformer.train.launch import Launch
from polyformer.train.metrics import read_metrics

TRAIN = learnable_tokens(20_000, 0)
VAL = learnable_tokens(2_000, 1)


def _without_time(records):
    return [{k: v for k, v in r.items() if k != "elapsed"} for r in records]


def _launch(tmp_path, name, **overrides):
    config = tiny_config(tmp_path / name, **overrides)
    return Launch(str(tmp_path / "data"), tiny_spec(dropout=0.1), config).write()


def _train_process(launch_path):
    return subprocess.Popen([sys.executable, "-m", "polyformer.train", str(launch_path)], env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_loss_curve(tmp_path):
    make_data(tmp_path / "data")
    settings = dict(total_steps=160, checkpoint_interval=20, eval_interval=20, warmup_steps=10)
    whole = _train_process(_launch(tmp_path, "whole", **settings))
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err

    launch = _launch(tmp_path, "killed", **settings)
    victim = _train_process(launch)
    second_checkpoint = tmp_path / "killed" / "checkpoints" / "step-00000040"
    deadline = time.monotonic() + 240
    while not second_checkpoint.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    done_before_kill = max(r["step"] for r in read_metrics(tmp_path / "killed" / "metrics.jsonl"))
    assert 40 <= done_before_kill < 160  # killed mid-way, after a checkpoint

    resumed = _train_process(launch)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    expected = _without_time(read_metrics(tmp_path / "whole" / "metrics.jsonl"))
    got = _without_time(read_metrics(tmp_path / "killed" / "metrics.jsonl"))
    assert len(expected) == 160 + 8
    assert got == expected  # every loss, learning rate and gradient norm, bit for bit


KILL_MID_WRITE = """
import os, signal, sys
import torch
import polyformer.train.checkpoint as checkpoint
from polyformer.train.launch import read_launch, run_launch

real_save = torch.save

def save_then_die(obj, path, *args, **kwargs):
    # step 10's model file is written; die before its optimizer file, manifest and rename
    if "step-00000010" in str(path):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, path, *args, **kwargs)

checkpoint.torch.save = save_then_die
run_launch(read_launch(sys.argv[1]))
"""


@pytest.mark.slow
def test_kill_in_the_middle_of_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    make_data(tmp_path / "data")
    settings = dict(total_steps=20, checkpoint_interval=5, eval_interval=5)
    launch = _launch(tmp_path, "run", **settings)
    victim = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(launch)], env=subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    assert victim.returncode == -signal.SIGKILL, victim.stderr
    checkpoints = tmp_path / "run" / "checkpoints"
    half_written = [p for p in checkpoints.iterdir() if p.name.startswith(".tmp-step-00000010")]
    assert len(half_written) == 1 and (half_written[0] / "model.safetensors").is_file()
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-00000005"]  # never committed

    resumed = _train_process(launch)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert not half_written[0].exists()  # cleaned once a newer checkpoint committed
    whole = _train_process(_launch(tmp_path, "whole", **settings))
    whole.communicate(timeout=300)
    assert _without_time(read_metrics(tmp_path / "run" / "metrics.jsonl")) == _without_time(
        read_metrics(tmp_path / "whole" / "metrics.jsonl"))  # resumed from step 5: the same run


def _trainer(out_dir, **overrides):
    config = tiny_config(out_dir, **overrides)
    seed_everything(config.seed)
    return Trainer(build_model(tiny_spec(dropout=0.1), VOCAB), TRAIN, VAL, config, tiny_spec(dropout=0.1))


def test_truncated_newest_checkpoint_is_refused_and_kept_and_the_previous_one_used(tmp_path, capsys):
    _trainer(tmp_path / "whole").fit()
    run = tmp_path / "run"
    _trainer(run).fit(stop_after=15)
    newest = run / "checkpoints" / "step-00000015"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    result = _trainer(run).fit()
    err = capsys.readouterr().err
    assert "refusing checkpoint" in err and "model.safetensors has" in err and "(truncated or overwritten)" in err
    assert result.resumed_from == 10
    assert (run / "checkpoints" / "step-00000015.corrupt" / "model.safetensors").is_file()  # kept, not deleted
    assert _without_time(read_metrics(run / "metrics.jsonl")) == _without_time(read_metrics(tmp_path / "whole" / "metrics.jsonl"))


def test_refusal_message_names_the_problem(tmp_path, capsys):
    run = tmp_path / "run"
    _trainer(run).fit(stop_after=10)
    state = run / "checkpoints" / "step-00000010" / "optimizer.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    state.write_bytes(bytes(data))
    assert _trainer(run).fit().resumed_from == 5
    err = capsys.readouterr().err
    assert "optimizer.pt does not match its SHA-256 checksum (corrupted)" in err and "previous checkpoint" in err


def test_no_good_checkpoint_is_an_error_not_a_silent_restart(tmp_path):
    run = tmp_path / "run"
    _trainer(run, keep_checkpoints=1).fit(stop_after=10)
    (run / "checkpoints" / "step-00000010" / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        _trainer(run).fit()


def test_resume_with_other_settings_is_refused(tmp_path):
    run = tmp_path / "run"
    _trainer(run).fit(stop_after=5)
    with pytest.raises(CheckpointError, match=r"lr \(checkpoint 0.003, now 0.001\)"):
        _trainer(run, lr=1e-3).fit()
    # fields that do not change the computation may differ
    assert _trainer(run, checkpoint_interval=4, progress=False).fit().resumed_from == 5


def test_leftover_temporary_checkpoint_is_ignored_and_cleaned(tmp_path):
    run = tmp_path / "run"
    _trainer(run).fit(stop_after=5)
    leftover = run / "checkpoints" / ".tmp-step-00000010-999999"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    assert _trainer(run).fit().resumed_from == 5
    assert not leftover.exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000015", "step-00000020"]
    state = json.loads((run / "checkpoints" / "step-00000020" / "state.json").read_text())
    assert state["step"] == 20 and len(state["rng"]) == 1
