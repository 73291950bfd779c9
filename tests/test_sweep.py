"""Scaling sweeps: planned budgets and FLOPs, runs recorded in the store, skipping and exact
resumption after a kill."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest

from _train_helpers import VOCAB, kill_test_sweep, learnable_tokens, make_data, subprocess_env
from polyformer.data.tokens import write_tokens
from polyformer.errors import ConfigError
from polyformer.scaling.store import RunStore
from polyformer.scaling.sweep import ModelSize, SweepPlan, plan_runs, quick_plan, run_sweep
from polyformer.train import build_model
from polyformer.train.metrics import read_metrics

FAMILY = "_tiny_lm:build_sized"


def _plan(**changes):
    return dataclasses.replace(quick_plan(), family=FAMILY, seq_len=16, **changes)


def test_model_sizes_and_plans_are_checked():
    assert ModelSize.parse("4x128x4") == ModelSize(4, 128, 4)
    with pytest.raises(ConfigError, match="n_layers x d_model x n_heads"):
        ModelSize.parse("4x128")
    with pytest.raises(ConfigError, match="divisible"):
        ModelSize(2, 30, 4)
    with pytest.raises(ConfigError, match="either tokens"):
        SweepPlan(sizes=[ModelSize(1, 8, 2)], tokens=[1000], tokens_per_param=20)
    plan = SweepPlan.from_dict({"sizes": ["1x8x2", {"n_layers": 2, "d_model": 8, "n_heads": 2}], "tokens": [1000, 4000]})
    assert plan.tokens_per_param is None and len(plan.sizes) == 2
    with pytest.raises(ConfigError, match="unknown option"):
        SweepPlan.from_dict({"sizes": ["1x8x2"], "learning_rate": 1.0})


def test_budgets_flops_and_parameter_counts(tmp_path):
    plan = _plan(tokens_per_param=None, tokens=[3000, 9000])
    runs = plan_runs(plan, VOCAB, tmp_path)
    assert len(runs) == 6 and [r.flops for r in runs] == sorted(r.flops for r in runs)
    for run in runs:
        model = build_model(run.spec, VOCAB)
        embeddings = model.wte.weight.numel() + model.wpe.weight.numel()
        assert run.params == sum(p.numel() for p in model.parameters())
        assert run.params_non_embedding == run.params - embeddings
        assert run.tokens == run.train.total_steps * 8 * 16 >= int(run.name.split("-D")[1])
        assert run.tokens - int(run.name.split("-D")[1]) < 8 * 16  # rounded up to whole steps
        assert run.flops == 6.0 * run.params_non_embedding * run.tokens
        context = 2 * run.size.n_layers * 16 * run.size.d_model
        assert run.flops_attention == pytest.approx(3 * run.tokens * (2 * run.params_non_embedding + context))
    ratio = plan_runs(_plan(tokens_per_param=2.0), VOCAB, tmp_path)
    assert all(abs(r.tokens - 2.0 * r.params_non_embedding) <= 8 * 16 for r in ratio)


def test_sweep_records_every_run_and_skips_finished_ones(tmp_path):
    make_data(tmp_path / "data")
    store_path = tmp_path / "runs.sqlite"
    result = run_sweep(_plan(), tmp_path / "data", store_path, sweep="q", progress=False, log=lambda s: None)
    assert len(result.trained) == 3 and not result.failed
    with RunStore(store_path) as store:
        runs = store.runs(sweep="q", status="finished")
        assert len(runs) == 3
        for run in runs:
            metrics = read_metrics(tmp_path / "runs_runs" / "q" / run.name / "metrics.jsonl")
            evals = [r for r in metrics if r["kind"] == "eval"]
            assert run.final_val_loss == evals[-1]["val_loss"]
            assert [p["loss"] for p in store.curve(run.id)] == [r["val_loss"] for r in evals]
            assert len(store.curve(run.id, "train")) == run.config["train"]["total_steps"]
        assert len(store.records(sweep="q")) == 3
    again = run_sweep(_plan(), tmp_path / "data", store_path, sweep="q", progress=False, log=lambda s: None)
    assert again.trained == [] and len(again.skipped) == 3
    # the same folder prepared again from other text: the finished runs are not its runs
    write_tokens(tmp_path / "data" / "train.bin", learnable_tokens(12_000, 5), VOCAB, split="train")
    with pytest.raises(ConfigError, match="other data"):
        run_sweep(_plan(), tmp_path / "data", store_path, sweep="q", progress=False, log=lambda s: None)


SWEEP_SCRIPT = "import sys; from _train_helpers import kill_test_sweep; kill_test_sweep(sys.argv[1], sys.argv[2])"


@pytest.mark.slow
def test_killed_sweep_resumes_and_matches_an_uninterrupted_one(tmp_path):
    data = make_data(tmp_path / "data")
    whole = subprocess.run([sys.executable, "-c", SWEEP_SCRIPT, str(data), str(tmp_path / "whole.sqlite")],
                           env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr

    killed_store = tmp_path / "killed.sqlite"
    victim = subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, str(data), str(killed_store)],
                              env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "killed_runs" / "k" / "L2-d32-h2-D10000" / "checkpoints"
    deadline = time.monotonic() + 240
    while victim.poll() is None and time.monotonic() < deadline and not any(checkpoints.glob("step-*")):
        time.sleep(0.005)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    with RunStore(killed_store) as store:
        assert [r.status for r in store.runs()] == ["finished", "running"]

    kill_test_sweep(str(data), str(killed_store))  # the same sweep again, in this process
    with RunStore(tmp_path / "whole.sqlite") as a, RunStore(killed_store) as b:
        assert [r.status for r in b.runs()] == ["finished", "finished"]
        for run_a, run_b in zip(a.runs(), b.runs()):
            assert run_a.final_val_loss == run_b.final_val_loss
            assert a.curve(run_a.id, "train") == b.curve(run_b.id, "train")
            assert a.curve(run_a.id) == b.curve(run_b.id)
