"""The clip-shapes recipe at tiny size: training on the trainer, the saved folder, evaluation against
references (zero-shot through the model's own forward, ensembling through the pipeline, the probe
against scikit-learn), the CLI wiring, a sweep of the clip family and the demo section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from polyformer.data.shapes import CLASS_NAMES, HELD_OUT, load_shapes

pytest.importorskip("easy_vqa")

TINY = dict(d_model=16, d_ff=32, projection_dim=16, n_layers=1, n_heads=2, patch_size=16, steps=6, batch_size=16,
            warmup_steps=1, captions_per_image=3, threads=None)


def _subsets(train_count: int = 160, test_count: int = 96):
    train, test = load_shapes()
    rng = np.random.default_rng(0)
    return train.take(rng.permutation(len(train))[:train_count]), test.take(rng.permutation(len(test))[:test_count])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from polyformer.recipes.clip import CLIPShapesOptions, train_clip_shapes

    out = tmp_path_factory.mktemp("clip") / "model"
    data = _subsets()
    return train_clip_shapes(CLIPShapesOptions(**TINY), out, data=data, progress=False), out, data


def test_the_recipe_writes_a_folder_with_its_processor_and_metrics(trained):
    result, out, (train, test) = trained
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["recipe"] == "clip-shapes"
    assert metrics["train_pairs"] == len(train) - int(train.is_held_out().sum())
    assert metrics["held_out_test_images"] == int(test.is_held_out().sum()) > 0
    assert [r["combination"] for r in metrics["held_out"]] == [f"{c} {s}" for c, s in HELD_OUT]
    assert 0.0 < metrics["logit_scale"] <= 100.0
    from polyformer import CLIPModel

    loaded = CLIPModel.from_pretrained(out)
    assert loaded.config.text_config.max_position_embeddings == 16
    assert loaded.config.vision_config.image_size == 64


def test_zero_shot_accuracy_equals_the_models_own_forward(trained):
    result, _, (train, test) = trained
    prompts = [f"a photo of a {name}" for name in CLASS_NAMES]
    right = held_right = 0
    held = test.is_held_out()
    with torch.no_grad():
        for k in range(len(test)):  # one image at a time, as the chapter's example does
            inputs = result.processor(text=prompts, images=test.images[k], return_tensors="pt", padding=True)
            chosen = int(result.model(**inputs).logits_per_image.argmax(dim=1))
            right += chosen == test.classes[k]
            held_right += held[k] and chosen == test.classes[k]
    assert result.metrics["zero_shot_accuracy"] == pytest.approx(right / len(test))
    assert result.metrics["zero_shot_held_out_accuracy"] == pytest.approx(held_right / held.sum())


def test_the_pipelines_prompt_ensemble_equals_the_direct_one(trained):
    from polyformer.recipes.clip import evaluate_shapes

    result, out, (train, test) = trained
    assert result.metrics["ensemble_via"] == "pipeline"
    direct = evaluate_shapes(result.model, result.processor, train, test, folder=None)
    assert direct["ensemble_via"] == "direct"
    for key in ("ensemble_accuracy", "ensemble_held_out_accuracy", "zero_shot_accuracy", "probe_accuracy"):
        assert direct[key] == pytest.approx(result.metrics[key]), key


def test_the_linear_probe_agrees_with_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    from polyformer.recipes.clip import fit_linear_probe

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 8)) * 2
    y = rng.integers(0, 5, size=400)
    x = centres[y] + rng.normal(size=(400, 8))
    l2 = 1e-2
    ours = fit_linear_probe(x, y, 5, l2=l2)(x)
    # scikit-learn minimises C * sum(losses) + |W|^2 / 2, i.e. mean loss + |W|^2 / (2 C n)
    reference = LogisticRegression(C=1 / (2 * l2 * len(x)), max_iter=5000, tol=1e-8).fit(x, y).predict(x)
    assert (ours == reference).mean() >= 0.99


def test_the_cli_builds_the_recipes_options(monkeypatch, capsys, tmp_path):
    import polyformer.recipes.clip as recipe
    from polyformer.cli import main

    seen = {}

    def fake(options, out, progress):
        seen.update(options=options, out=out, progress=progress)
        metrics = {key: 0.5 for key in ("zero_shot_accuracy", "zero_shot_held_out_accuracy", "ensemble_accuracy",
                                        "ensemble_held_out_accuracy", "probe_accuracy", "factored_probe_accuracy",
                                        "factored_probe_held_out_accuracy", "train_seconds", "total_seconds")}
        metrics.update(chance=1 / 24, held_out_test_images=166, ensemble_via="pipeline", steps=3, threads=2,
                       held_out=[{"combination": "red circle", "test_images": 37, "zero_shot_accuracy": 0.5,
                                  "most_chosen": "red circle"}])
        return recipe.CLIPShapesResult(None, None, metrics, 1.0, 3)

    monkeypatch.setattr(recipe, "train_clip_shapes", fake)
    assert main(["train", "clip-shapes", "--out", str(tmp_path), "--steps", "3", "--d-model", "32", "--quiet"]) == 0
    options = seen["options"]
    assert (options.steps, options.d_model, options.d_ff, options.projection_dim) == (3, 32, 128, 32)
    assert seen["out"] == tmp_path and seen["progress"] is False
    assert "held out red circle" in capsys.readouterr().out
    assert main(["train", "clip-shapes", "--patch-size", "7"]) == 2  # does not divide 64: a named error


def test_a_sweep_of_the_clip_family_on_shapes(tmp_path):
    from polyformer.scaling.store import RunStore
    from polyformer.scaling.sweep import ModelSize, SweepPlan, run_sweep

    plan = SweepPlan(sizes=[ModelSize(1, 8, 2), ModelSize(1, 16, 2)], tokens=[4 * 8 * 29], tokens_per_param=None,
                     batch_size=8, lr=3e-3, eval_tokens=29 * 16, evals_per_run=1, family="clip",
                     model_config={"patch_size": 16}, data_options={"train_limit": 64, "test_limit": 16, "context": 12,
                                                                    "captions_per_image": 2})
    result = run_sweep(plan, "shapes", tmp_path / "runs.sqlite", sweep="clip", progress=False, log=lambda s: None)
    assert len(result.trained) == 2 and not result.failed
    with RunStore(tmp_path / "runs.sqlite") as store:
        runs = store.runs(status="finished")
    # one example: 16 patches + the class token + a 12-token text context
    assert {r.tokens for r in runs} == {4 * 8 * (16 + 1 + 12)}
    assert all(np.isfinite(r.final_val_loss) for r in runs)


def test_augmentation_picks_one_caption_and_moves_images_like_a_loop():
    from polyformer.recipes.clip import augment_pairs

    torch.manual_seed(1)
    batch = {"pixel_values": torch.randn(5, 3, 8, 8), "input_ids": torch.randint(0, 9, (5, 4, 6)),
             "attention_mask": torch.randint(0, 2, (5, 4, 6)), "labels": torch.arange(5)}
    out = augment_pairs(batch, np.random.default_rng(7), flip=True, max_shift=2)
    # the same draws, replayed in their order: caption, mirror, vertical and horizontal offsets
    generator = np.random.default_rng(7)
    pick = generator.integers(0, 4, size=5)
    mirrored = generator.random(5) < 0.5
    dy, dx = generator.integers(0, 5, size=5), generator.integers(0, 5, size=5)
    for i in range(5):
        assert torch.equal(out["input_ids"][i], batch["input_ids"][i, pick[i]])
        assert torch.equal(out["attention_mask"][i], batch["attention_mask"][i, pick[i]])
        image = batch["pixel_values"][i].flip(-1) if mirrored[i] else batch["pixel_values"][i]
        for y in range(8):
            for x in range(8):
                # an offset pixel outside the image takes the nearest edge pixel
                source_y, source_x = min(max(y + dy[i] - 2, 0), 7), min(max(x + dx[i] - 2, 0), 7)
                assert torch.equal(out["pixel_values"][i, :, y, x], image[:, source_y, source_x])
    assert torch.equal(out["labels"], batch["labels"])


def test_shapes_data_refuses_other_tasks_and_unknown_options():
    from polyformer.errors import ConfigError, DataError
    from polyformer.train.data import load_task_data

    with pytest.raises(DataError, match="contrastive task, not 'classification'"):
        load_task_data("classification", "shapes")
    with pytest.raises(ConfigError, match=r"unknown data options \['rotate'\]; shapes takes"):
        load_task_data("contrastive", "shapes", {"rotate": 2})
