"""Training tasks against references: BERT's 80/10/10 masking (its statistics and a naive loop),
losses against F.cross_entropy, Hugging Face's BertForMaskedLM and iGPT's image_nll, example
batches (epochs, processes), and the trainer on a classification task reaching a known accuracy."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _toy_models import blobs, hf_bert_mlm
from _train_helpers import VOCAB, learnable_tokens
from polyformer.errors import ConfigError, DataError, ShapeError
from polyformer.train import ExampleSet, ModelSpec, TrainConfig, Trainer, build_model, make_task, seed_everything, train
from polyformer.train.examples import ExampleSampler
from polyformer.train.masking import IGNORE_INDEX, mask_tokens
from polyformer.train.metrics import read_metrics

CLASSIFIER = ModelSpec("_toy_models:mlp_classifier", {"hidden": 16}, task="classification")


# ----- masked-LM corruption ----------------------------------------------------------------------------
def _naive_mask(ids, seed, vocab, mask_id, p, special):
    """Position by position, from the same three draws in the same order."""
    rng = np.random.default_rng(seed)
    chosen_draw, kind_draw = rng.random(ids.shape), rng.random(ids.shape)
    replacement = rng.integers(0, vocab, size=ids.shape)
    inputs, labels = ids.clone(), torch.full_like(ids, -100)
    for i in range(ids.shape[0]):
        for j in range(ids.shape[1]):
            token = int(ids[i, j])
            if token in special or chosen_draw[i, j] >= p:
                continue
            labels[i, j] = token
            if kind_draw[i, j] < 0.8:
                inputs[i, j] = mask_id
            elif kind_draw[i, j] < 0.9:
                inputs[i, j] = int(replacement[i, j])
    return inputs, labels


def test_masking_matches_a_naive_loop_exactly():
    ids = torch.from_numpy(learnable_tokens(12 * 20, 3).reshape(12, 20))
    for seed in (0, 1, [5, 7, 9]):
        got = mask_tokens(ids, np.random.default_rng(seed), VOCAB, mask_token_id=1, probability=0.3, special_ids=[0, 2])
        want = _naive_mask(ids, seed, VOCAB, 1, 0.3, {0, 2})
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # a pinned draw, so that a change of draw order is noticed
    inputs, labels = mask_tokens(torch.arange(10)[None], np.random.default_rng(0), 10, 9, probability=0.5)
    assert inputs.tolist() == [[0, 9, 0, 9, 4, 5, 6, 7, 8, 9]]  # 1 masked, 2 replaced by 0, 3 masked
    assert labels.tolist() == [[-100, 1, 2, 3, -100, -100, -100, -100, -100, -100]]


def test_masking_follows_the_80_10_10_rule():
    vocab, n = 1000, 400_000
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, vocab, size=(400, 1000)))
    ids[:, 0] = 0  # a special token at the start of every row: never chosen
    inputs, labels = mask_tokens(ids, np.random.default_rng(1), vocab, mask_token_id=3, special_ids=[0])
    chosen = labels != IGNORE_INDEX
    candidates = int((ids != 0).sum())
    sigma = (0.15 * 0.85 / candidates) ** 0.5
    assert abs(chosen.sum().item() / candidates - 0.15) < 4 * sigma
    assert not chosen[:, 0].any() and torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # what is not chosen is never touched
    k = int(chosen.sum())
    masked = (inputs[chosen] == 3) & (ids[chosen] != 3)
    changed = (inputs[chosen] != 3) & (inputs[chosen] != ids[chosen])
    kept = inputs[chosen] == ids[chosen]
    # a random replacement may draw the original token (1/vocab) or the mask id (1/vocab)
    for observed, expected in ((masked, 0.8 + 0.1 / vocab), (changed, 0.1 * (1 - 2 / vocab)), (kept, 0.1 + 0.1 / vocab)):
        tolerance = 4 * (expected * (1 - expected) / k) ** 0.5
        assert abs(observed.sum().item() / k - expected) < tolerance
    replaced = inputs[chosen][changed].double()
    assert abs(replaced.mean().item() - (vocab - 1) / 2) < 4 * vocab / (12 * changed.sum().item()) ** 0.5
    assert n == ids.numel()


def test_masking_options_are_checked():
    with pytest.raises(ConfigError, match="mask_token_id"):
        make_task("masked-lm", {}, vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        make_task("masked-lm", {"mask_token_id": VOCAB}, vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="probability"):
        make_task("masked-lm", {"mask_token_id": 1, "probability": 1.5}, vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="known tasks: classification, contrastive, masked-lm, model-loss, next-pixel, next-token"):
        make_task("ctc")


# ----- losses against references -----------------------------------------------------------------------
def test_masked_lm_loss_is_hugging_faces_bert_loss():
    model = hf_bert_mlm({"d_model": 32}, VOCAB).eval()
    task = make_task("masked-lm", {"mask_token_id": 1}, vocab_size=VOCAB)
    ids = torch.from_numpy(learnable_tokens(4 * 16, 2).reshape(4, 16))
    batch = task.corrupt(ids, np.random.default_rng(0))
    reference = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    torch.testing.assert_close(task.loss(model, batch), reference, rtol=1e-6, atol=1e-6)
    sums = task.eval_sums(model, batch)
    assert sums["count"] == int((batch["labels"] != -100).sum())


def test_classification_loss_and_accuracy_against_cross_entropy():
    seed_everything(0)
    model = build_model(CLASSIFIER, 4)
    task = make_task("classification")
    data = blobs(50, 0)
    batch = data.take(np.arange(50))
    logits = model(features=batch["features"]).logits.detach()
    torch.testing.assert_close(task.loss(model, batch), F.cross_entropy(logits, batch["labels"]))
    sums = task.eval_sums(model, batch)
    assert sums["count"] == 50
    assert sums["correct"] == sum(int(logits[i].argmax()) == int(batch["labels"][i]) for i in range(50))
    assert sums["loss"] == pytest.approx(sum(float(F.cross_entropy(logits[i:i + 1], batch["labels"][i:i + 1]))
                                             for i in range(50)), rel=1e-5)


def test_next_pixel_loss_is_igpts_image_nll():
    from polyformer.recipes.digits import pixel_examples

    seed_everything(0)
    model = build_model(ModelSpec("igpt", {"n_positions": 16, "d_model": 16, "n_layers": 1, "n_heads": 2}), 5).eval()
    pixels = torch.randint(0, 4, (6, 16))
    batch = pixel_examples(pixels, start_token=4).take(np.arange(6))
    torch.testing.assert_close(make_task("next-pixel").loss(model, batch), model.image_nll(pixels))


# ----- example batches -----------------------------------------------------------------------------------
def test_example_batches_are_epochs_and_split_over_processes_like_one():
    data = ExampleSet({"x": torch.arange(10)[:, None]}, torch.arange(10))
    one = ExampleSampler(data, batch_size=4, grad_accum=1, seed=3)
    stream = np.concatenate([one.positions(s) for s in range(5)])  # 20 draws: two whole epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    two = [ExampleSampler(data, batch_size=1, grad_accum=2, seed=3, rank=r, world_size=2) for r in range(2)]
    for step in range(4):
        split = torch.cat([two[r].batch(step, m)["labels"] for m in range(2) for r in range(2)])
        assert split.tolist() == one.batch(step, 0)["labels"].tolist()
    with pytest.raises(ShapeError, match="share the first dimension"):
        ExampleSet({"x": torch.zeros(3, 2)}, torch.zeros(4))
    with pytest.raises(DataError, match="token stream"):
        make_task("next-token").sampler(data, TrainConfig(seq_len=4, warmup_steps=0, total_steps=2), 0, 1)


# ----- the trainer on a classification task ----------------------------------------------------------------
def _classifier_config(out_dir, **changes):
    values = dict(total_steps=60, batch_size=16, seq_len=2, lr=0.02, warmup_steps=5, weight_decay=0.0,
                  eval_interval=20, eval_tokens=400, checkpoint_interval=20, progress=False, out_dir=str(out_dir))
    return TrainConfig(**{**values, **changes})


def test_trainer_learns_a_separable_classification_task(tmp_path):
    result = train(CLASSIFIER, blobs(800, 0), blobs(400, 1), 4, _classifier_config(tmp_path / "run"))
    assert result.metrics["val_accuracy"] >= 0.98  # the blobs overlap for ~0.2% of points
    assert result.tokens == 60 * 16  # one token per example (the data says nothing else)
    evals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [20, 40, 60] and evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert evals[-1]["val_accuracy"] == result.metrics["val_accuracy"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["task"] == "classification"


def test_classification_resumes_exactly(tmp_path):
    whole = train(CLASSIFIER, blobs(300, 0), blobs(100, 1), 4, _classifier_config(tmp_path / "a"))
    seed_everything(0)
    model = build_model(CLASSIFIER, 4)
    trainer = Trainer(model, blobs(300, 0), blobs(100, 1), _classifier_config(tmp_path / "b"), CLASSIFIER,
                      task=make_task("classification"))
    trainer.fit(stop_after=30)  # a session that ends early, with a checkpoint at step 30
    resumed = train(CLASSIFIER, blobs(300, 0), blobs(100, 1), 4, _classifier_config(tmp_path / "b"))
    assert resumed.resumed_from == 30 and resumed.final_val_loss == whole.final_val_loss

    def timeless(path):
        return [{k: v for k, v in r.items() if k != "elapsed"} for r in read_metrics(path)]

    assert timeless(tmp_path / "a" / "metrics.jsonl") == timeless(tmp_path / "b" / "metrics.jsonl")


def _skewed_tokens(n, seed):
    """Tokens drawn from a Zipf-like distribution over the vocabulary, and its entropy (nats)."""
    p = 1.0 / np.arange(1, VOCAB + 1) ** 1.5
    p /= p.sum()
    return np.random.default_rng(seed).choice(VOCAB, size=n, p=p).astype(np.int64), float(-(p * np.log(p)).sum())


@pytest.mark.parametrize("spec", [
    ModelSpec("bert", {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "dropout": 0.0,
                       "attention_dropout": 0.0}, task_options={"mask_token_id": 1}),
    ModelSpec("_toy_models:hf_bert_mlm", {"d_model": 32}, task="masked-lm", task_options={"mask_token_id": 1}),
], ids=["bert", "hf-bert"])
def test_trainer_runs_masked_lm(tmp_path, spec):
    train_tokens, entropy = _skewed_tokens(8000, 0)
    config = TrainConfig(total_steps=40, batch_size=8, seq_len=16, lr=3e-3, warmup_steps=4, eval_interval=0,
                         eval_tokens=512, progress=False, out_dir=str(tmp_path / "run"))
    result = train(spec, train_tokens, _skewed_tokens(1000, 1)[0], VOCAB, config)
    first = read_metrics(tmp_path / "run" / "metrics.jsonl")[0]["loss"]
    assert first > 3.9  # ln 64 = 4.16: uniform at the start
    # most of the way from uniform to the unigram entropy (2.38 nats) in 40 steps
    assert entropy - 0.3 < result.final_val_loss < (np.log(VOCAB) + entropy) / 2


def test_unknown_family_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown model family 'wav2vec2'; known families: bert, clip, gpt, igpt, tapas, timesformer, vit"):
        build_model(ModelSpec("wav2vec2"), 10)


def test_a_vit_position_table_is_not_decayed():
    from polyformer.train.models import no_decay_names
    from polyformer.train.optim import build_optimizer

    spec = ModelSpec("vit", {"image_size": 8, "patch_size": 4, "num_channels": 1, "d_model": 16, "n_layers": 1,
                             "n_heads": 2, "d_ff": 32, "num_labels": 2})
    model = build_model(spec, None)
    decayed, kept = build_optimizer(model, TrainConfig(warmup_steps=0), no_decay_names(spec)).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] > 0 and kept["weight_decay"] == 0
    assert "vit.embeddings.position_embeddings" in {names[id(p)] for p in kept["params"]}
    assert {names[id(p)] for p in decayed["params"]} == {n for n, p in model.named_parameters()
                                                         if p.ndim >= 2 and n != "vit.embeddings.position_embeddings"}
