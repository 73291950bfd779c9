"""Trainer pieces against closed forms and naive references: schedule, batches, optimiser,
clipping, accumulation, bf16, evaluation, metrics."""

import json
import math

import numpy as np
import pytest
import torch

from _train_helpers import VOCAB, learnable_tokens, tiny_config, tiny_spec
from polyformer.errors import ConfigError
from polyformer.train import Trainer, TrainConfig, build_model, count_parameters, seed_everything
from polyformer.train.batches import WindowSampler, eval_windows
from polyformer.train.metrics import MetricsLog, read_metrics
from polyformer.train.optim import build_optimizer
from polyformer.train.schedule import learning_rate

TRAIN = learnable_tokens(20_000, 0)
VAL = learnable_tokens(2_000, 1)


def _trainer(tmp_path, **overrides):
    config = tiny_config(tmp_path, **overrides)
    seed_everything(config.seed)
    return Trainer(build_model(tiny_spec(), VOCAB), TRAIN, VAL, config, tiny_spec())


def test_schedule_matches_the_closed_form():
    config = TrainConfig(total_steps=101, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(9, config) == pytest.approx(1.0)
    assert learning_rate(10, config) == pytest.approx(1.0)
    assert learning_rate(55, config) == pytest.approx(0.55)  # half way down the cosine: (1 + 0.1) / 2
    assert learning_rate(100, config) == pytest.approx(0.1)  # ends exactly at the floor
    for step in range(10, 100):
        expected = 0.1 + 0.45 * (1 + math.cos(math.pi * (step - 10) / 90))
        assert learning_rate(step, config) == pytest.approx(expected)


@pytest.mark.parametrize("field, value, message", [
    ("total_steps", 0, "total_steps"), ("lr", -1.0, "lr"), ("warmup_steps", 50, "warmup_steps"),
    ("clip", -1.0, "clip"), ("seq_len", 1, "seq_len"), ("min_lr_ratio", 2.0, "min_lr_ratio"),
])
def test_config_checks_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{"total_steps": 10, "warmup_steps": 2, field: value})
    with pytest.raises(ConfigError, match="unknown option"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_batches_are_a_function_of_seed_and_step_and_split_across_processes():
    tokens = np.arange(1000)
    one = WindowSampler(tokens, 8, batch_size=4, grad_accum=2, seed=3)
    again = WindowSampler(tokens, 8, batch_size=4, grad_accum=2, seed=3)
    assert torch.equal(one.batch(7, 1)["input_ids"], again.batch(7, 1)["input_ids"])
    assert not torch.equal(one.batch(7, 0)["input_ids"], one.batch(8, 0)["input_ids"])
    # windows are contiguous slices of the token array
    ids = one.batch(5, 0)["input_ids"]
    assert torch.equal(ids - ids[:, :1], torch.arange(8).expand(4, 8))
    # two processes with one micro-batch each draw exactly the global batch of one process with two
    single = torch.cat([one.batch(5, m)["input_ids"] for m in range(2)])
    ranks = [WindowSampler(tokens, 8, 4, 1, 3, rank=r, world_size=2).batch(5, 0)["input_ids"] for r in range(2)]
    assert torch.equal(torch.cat(ranks), single)


def test_eval_windows_are_fixed_non_overlapping_and_spread():
    starts = eval_windows(1000, 10, 200)
    assert len(starts) == 20 and starts[0] == 0 and starts[-1] >= 900
    assert np.all(np.diff(starts) >= 10) and np.all(starts % 10 == 0)
    assert len(eval_windows(1000, 10, 10**9)) == 100  # capped by the split


def test_weight_decay_only_on_matrices_and_tied_weights_once():
    model = build_model(tiny_spec(), VOCAB)
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.1))
    decayed, plain = optimizer.param_groups
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim < 2 for p in plain["params"])
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    n_params = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert n_params == count_parameters(model)[0] == sum(p.numel() for p in model.parameters())


def test_loss_falls_and_metrics_are_json_lines(tmp_path):
    result = _trainer(tmp_path, total_steps=40).fit()
    records = read_metrics(tmp_path / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 41))
    assert [r["step"] for r in evals] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert train[-1]["tokens"] == 40 * 4 * 16
    assert evals[-1]["val_loss"] == result.final_val_loss < evals[0]["val_loss"] < math.log(VOCAB) + 0.5
    assert [r["lr"] for r in train] == [learning_rate(s, tiny_config(tmp_path, total_steps=40)) for s in range(40)]
    assert json.loads((tmp_path / "config.json").read_text())["train"]["total_steps"] == 40


def test_evaluate_matches_a_naive_loop(tmp_path):
    trainer = _trainer(tmp_path, eval_tokens=160)
    model = trainer.model.eval()
    losses = []
    with torch.no_grad():
        for start in eval_windows(len(VAL), 16, 160):
            ids = torch.as_tensor(VAL[start : start + 16]).long()[None]
            logits = model(input_ids=ids).logits[0]
            losses.append(torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:]).item())
    assert trainer.evaluate() == pytest.approx(float(np.mean(losses)), rel=1e-6)


def test_clipping_bounds_the_gradient_the_optimiser_sees(tmp_path):
    trainer = _trainer(tmp_path, clip=0.05, total_steps=4, warmup_steps=1, checkpoint_interval=0)
    seen = []
    original = trainer.optimizer.step

    def spy(*args, **kwargs):
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return original(*args, **kwargs)

    trainer.optimizer.step = spy
    trainer.fit()
    logged = [r["grad_norm"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert all(n > 0.05 for n in logged)  # the logged norm is before clipping
    assert seen == pytest.approx([0.05] * 4, rel=1e-4)


def _first_step_gradients(trainer):
    captured = {}
    original = trainer.optimizer.step

    def spy(*args, **kwargs):
        if not captured:
            captured.update({n: p.grad.clone() for n, p in trainer.model.named_parameters()})
        return original(*args, **kwargs)

    trainer.optimizer.step = spy
    return captured


def test_accumulation_equals_one_big_batch(tmp_path):
    """Two micro-batches of 4 give the gradient of one batch of 8 (the same windows, mean loss)."""
    big = _trainer(tmp_path / "big", batch_size=8, grad_accum=1, total_steps=4)
    accumulated = _trainer(tmp_path / "acc", batch_size=4, grad_accum=2, total_steps=4)
    grads = [_first_step_gradients(t) for t in (big, accumulated)]
    big.fit()
    accumulated.fit()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7)
    for p, q in zip(big.model.parameters(), accumulated.model.parameters()):
        # Adam's update is about lr in size whatever the gradient: last-bit differences in tiny
        # gradients can move a weight by a fraction of lr, no more.
        torch.testing.assert_close(p, q, rtol=0, atol=0.1 * 3e-3)
    losses = [[r["loss"] for r in read_metrics(t / "metrics.jsonl") if r["kind"] == "train"]
              for t in (tmp_path / "big", tmp_path / "acc")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_bf16_autocast_trains_and_tracks_fp32(tmp_path):
    fp32 = _trainer(tmp_path / "fp32", total_steps=30, eval_interval=0).fit()
    bf16_trainer = _trainer(tmp_path / "bf16", total_steps=30, eval_interval=0, bf16=True)
    # the forward really runs in bfloat16
    dtypes = []
    layer = bf16_trainer.model.decoder.layers[0].mlp.fc_in
    handle = layer.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    bf16 = bf16_trainer.fit()
    handle.remove()
    assert torch.bfloat16 in dtypes
    assert bf16.final_val_loss == pytest.approx(fp32.final_val_loss, rel=0.05)
    assert all(p.dtype == torch.float32 for p in bf16_trainer.model.parameters())  # master weights stay fp32


def test_metrics_log_drops_partial_lines_and_later_steps(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    for step in (1, 2, 3):
        log.write({"kind": "train", "step": step, "loss": float(step)})
    log.close()
    with open(tmp_path / "m.jsonl", "a") as handle:
        handle.write('{"kind": "train", "step": 4, "lo')  # a write cut short by a kill
    assert [r["step"] for r in read_metrics(tmp_path / "m.jsonl")] == [1, 2, 3]
    log.truncate_after(2)
    assert (tmp_path / "m.jsonl").read_text().count("\n") == 2
    assert [r["step"] for r in read_metrics(tmp_path / "m.jsonl")] == [1, 2]
