"""The sweep's command-line pieces: ladders, overrides, token counts, and --runs STORE."""

import argparse
import json

import pytest

from polyformer.commands.scaling_sweep import plan_from_args, token_count
from polyformer.errors import ConfigError
from polyformer.scaling.sweep import DEFAULT_SIZES, ModelSize


def _args(**given):
    values = dict(ladder="default", sizes=None, tokens=None, tokens_per_param=None, lr=None, batch_size=None,
                  seq_len=None, eval_tokens=None, evals_per_run=None, seed=None, family=None, attention=None,
                  train_limit=None)
    values.update(given)
    return argparse.Namespace(**values)


def test_token_counts():
    assert [token_count(t) for t in ("2M", "500k", "1.5e6", "1200")] == [2_000_000, 500_000, 1_500_000, 1200]
    with pytest.raises(ConfigError, match="2M or 500k"):
        token_count("lots")


def test_zero_tokens_per_param_is_refused_not_ignored():
    with pytest.raises(ConfigError, match="tokens_per_param"):
        plan_from_args(_args(tokens_per_param=0.0))


def test_default_ladder_spans_a_decade_of_sizes():
    plan = plan_from_args(_args())
    assert tuple(plan.sizes) == DEFAULT_SIZES and len(plan.sizes) >= 6 and plan.tokens_per_param == 20.0


def test_overrides_and_plan_files(tmp_path):
    plan = plan_from_args(_args(sizes="1x8x2,2x16x2", tokens="1M,2M", lr=1e-3, attention="sliding_window"))
    assert plan.sizes == (ModelSize(1, 8, 2), ModelSize(2, 16, 2))
    assert plan.tokens == (1_000_000, 2_000_000) and plan.tokens_per_param is None and plan.lr == 1e-3
    assert plan.model_config == {"attention": "sliding_window"}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"sizes": ["1x8x2"], "tokens_per_param": 5, "seq_len": 64}))
    plan = plan_from_args(_args(ladder=str(path), batch_size=4))
    assert plan.sizes == (ModelSize(1, 8, 2),) and plan.seq_len == 64 and plan.batch_size == 4
    with pytest.raises(ConfigError, match="neither"):
        plan_from_args(_args(ladder="nonexistent"))
    with pytest.raises(ConfigError, match="not both"):
        plan_from_args(_args(tokens="1M", tokens_per_param=3.0))


def test_a_family_with_its_own_ladder_gets_it():
    plan = plan_from_args(_args(ladder=None, family="vit", train_limit=500))
    assert plan.family == "vit" and plan.data_options == {"train_limit": 500} and len(plan.sizes) == 5
    assert plan_from_args(_args(ladder=None, family="gpt")).sizes == DEFAULT_SIZES


def test_sweep_command_then_fit_from_the_store(tmp_path, capsys):
    from _train_helpers import make_data
    from polyformer.cli import main
    from polyformer.scaling.fit import fit_law
    from polyformer.scaling.store import read_store_runs

    make_data(tmp_path / "data")
    store, plot = tmp_path / "runs.sqlite", tmp_path / "sweep.png"
    sweep = ["scaling", "sweep", "--data", str(tmp_path / "data"), "--store", str(store), "--ladder", "quick",
             "--family", "_tiny_lm:build_sized", "--seq-len", "16", "--sizes", "1x8x2,1x16x2,2x16x2,2x24x2,2x32x2",
             "--no-progress"]
    assert main([*sweep, "--dry-run"]) == 0
    assert "L2-d32-h2" in capsys.readouterr().out and not store.exists()
    assert main([*sweep, "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "5 trained, 0 already finished, 0 failed" in out and plot.stat().st_size > 0
    assert main(sweep) == 0
    assert "0 trained, 5 already finished" in capsys.readouterr().out

    assert main(["scaling", "fit", "--runs", str(store), "--law", "power", "--variable", "C", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    reference = fit_law(read_store_runs(store), "power", variable="C").law.parameters()
    for name, value in reference.items():
        assert printed[name] == pytest.approx(value, rel=1e-6)
    assert main(["scaling", "fit", "--runs", str(tmp_path / "none.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err
