"""CLIP training pieces: the easy-VQA shapes and their labels, the contrastive task on the one
trainer (loss, evaluation counts, temperature clamp) and the ``clip`` family of sweeps."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from polyformer.data import shapes as S
from polyformer.errors import ConfigError, DataError
from polyformer.train import ExampleSet, ModelSpec, TrainConfig, Trainer, build_model, count_parameters, make_task
from polyformer.train.models import FAMILIES, tokens_per_example

easy_vqa = pytest.importorskip("easy_vqa")


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
def test_every_image_is_one_of_24_classes_and_agrees_with_its_what_questions():
    train, test = S.load_shapes()
    assert (len(train), len(test)) == (4000, 1000)
    for split, data in (("train", train), ("test", test)):
        assert data.images.shape[1:] == (64, 64, 3) and data.images.dtype == np.uint8
        assert set(np.unique(data.classes)) == set(range(24))  # every combination occurs in both splits
        row = {int(i): k for k, i in enumerate(data.ids)}
        questions, answers, ids = getattr(easy_vqa, f"get_{split}_questions")()
        checked = 0
        # The direct questions are an independent reference for the labels read from the pixels.
        for question, answer, image in zip(questions, answers, ids):
            k = row[int(image)]
            if question in ("what color is the shape?", "what is the color of the shape?"):
                assert S.COLORS[data.colors[k]] == answer
                checked += 1
            elif question.startswith("what shape"):
                assert S.SHAPES[data.shapes[k]] == answer
                checked += 1
        assert checked > len(data) // 2


def _drawn(shape: str, color: str, box=(20, 12, 44, 40)) -> np.ndarray:
    image = Image.new("RGB", (64, 64), (240, 236, 230))
    draw = ImageDraw.Draw(image)
    fill = tuple(int(v) for v in S.PALETTE[S.COLORS.index(color)])
    x0, y0, x1, y1 = box
    if shape == "rectangle":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse((x0, y0, x0 + 24, y0 + 24), fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    return np.asarray(image)


@pytest.mark.parametrize("shape", S.SHAPES)
@pytest.mark.parametrize("color", ["red", "teal", "black", "gray"])
def test_pixel_labels_of_drawn_shapes(shape, color):
    assert S.pixel_labels(_drawn(shape, color)) == (S.COLORS.index(color), S.SHAPES.index(shape))


def test_an_image_without_a_palette_colour_is_named():
    assert "eight colours" in S.pixel_labels(np.full((64, 64, 3), 200, dtype=np.uint8))


def _fake_package(tmp_path, images, questions):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    paths = {i: str(folder / f"{i}.png") for i in range(len(images))}
    rows = ([q for q, _, _ in questions], [a for _, a, _ in questions], [i for _, _, i in questions])
    return types.SimpleNamespace(get_train_questions=lambda: rows, get_train_image_paths=lambda: paths)


def test_a_question_that_contradicts_the_pixels_stops_loading(tmp_path, monkeypatch):
    package = _fake_package(tmp_path, [_drawn("circle", "red"), _drawn("triangle", "blue")],
                            [("what color is the shape?", "red", 0), ("is there not a triangle?", "no", 1),
                             ("is there a blue shape?", "no", 1)])
    monkeypatch.setattr(S, "_package", lambda: package)
    with pytest.raises(DataError, match=r"image 1\.png: the pixels show a blue triangle, but a question says the "
                                        r"color is not blue"):
        S._read_split("train")


def test_an_image_of_no_known_shape_stops_loading(tmp_path, monkeypatch):
    package = _fake_package(tmp_path, [np.full((64, 64, 3), 250, dtype=np.uint8)], [("is there a red shape?", "no", 0)])
    monkeypatch.setattr(S, "_package", lambda: package)
    with pytest.raises(DataError, match=r"not one of the 3 shapes x 8 colours: no pixel has one of the eight colours"):
        S._read_split("train")


def test_consistent_fake_data_loads(tmp_path, monkeypatch):
    package = _fake_package(tmp_path, [_drawn("circle", "red"), _drawn("triangle", "blue")],
                            [("what color is the shape?", "red", 0), ("is there not a triangle?", "no", 1)])
    monkeypatch.setattr(S, "_package", lambda: package)
    data = S._read_split("train")
    assert [S.CLASS_NAMES[c] for c in data.classes] == ["red circle", "blue triangle"]


def test_missing_package_names_the_pip_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "easy_vqa", None)
    with pytest.raises(DataError, match=r"pip install --no-deps easy-vqa"):
        S._package()


def test_held_out_combinations_leave_training_and_stay_in_test():
    train, test = S.load_shapes()
    kept = S.hold_out(train)
    names = {S.CLASS_NAMES[c] for c in kept.classes}
    held = {f"{c} {s}" for c, s in S.HELD_OUT}
    assert len(held) == 4 and not names & held and len(names) == 20
    assert len(kept) == len(train) - int(train.is_held_out().sum())
    assert {S.CLASS_NAMES[c] for c in test.classes[test.is_held_out()]} == held
    # each colour and each shape still appears in training
    assert set(kept.colors.tolist()) == set(range(8)) and set(kept.shapes.tolist()) == set(range(3))


def test_captions_are_seeded_varied_and_name_the_labels():
    colors, shapes = np.array([0, 4, 7]), np.array([0, 2, 1])
    first = S.captions(colors, shapes, per_image=5, seed=3)
    assert first == S.captions(colors, shapes, per_image=5, seed=3)
    assert first != S.captions(colors, shapes, per_image=5, seed=4)
    for row, color, shape in zip(first, colors, shapes):
        assert len(set(row)) == 5  # five different wordings
        assert all(S.COLORS[color] in c and S.SHAPES[shape] in c for c in row)
    with pytest.raises(ConfigError, match="per_image"):
        S.captions(colors, shapes, per_image=0)


# ------------------------------------------------------------------------------------------------
# The contrastive task
# ------------------------------------------------------------------------------------------------
def _tiny_clip(logit_scale: float = math.log(1 / 0.07)):
    spec = ModelSpec("clip", {"text_config": {"max_position_embeddings": 8, "eos_token_id": 49},
                              "vision_config": {"image_size": 16, "patch_size": 8},
                              "n_layers": 1, "d_model": 16, "n_heads": 2, "d_ff": 32, "projection_dim": 8,
                              "logit_scale_init_value": logit_scale})
    return build_model(spec, 50), spec


def _pairs(n: int, seed: int = 0) -> ExampleSet:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 49, (n, 8), generator=generator)
    lengths = torch.randint(2, 8, (n,), generator=generator)
    positions = torch.arange(8)
    ids[positions >= lengths[:, None]] = 49  # end-of-text, then padding with the same id
    mask = (positions <= lengths[:, None]).long()
    labels = torch.randint(0, 3, (n,), generator=generator)
    return ExampleSet({"pixel_values": torch.randn(n, 3, 16, 16, generator=generator), "input_ids": ids,
                       "attention_mask": mask}, labels)


def _naive_loss(logits: torch.Tensor) -> float:
    """Mean over images of -log softmax(row)[i] and over texts of -log softmax(column)[i], halved."""
    n = len(logits)
    rows = sum(-(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(n)) / n
    cols = sum(-(logits[i, i] - torch.logsumexp(logits[:, i], 0)) for i in range(n)) / n
    return float(((rows + cols) / 2).detach())


def test_contrastive_loss_and_evaluation_counts_match_a_loop():
    model, _ = _tiny_clip()
    model.eval()
    task = make_task("contrastive")
    batch = _pairs(6).take(np.arange(6))
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits_per_image
    assert float(task.loss(model, batch).detach()) == pytest.approx(_naive_loss(logits), abs=1e-5)
    sums = task.eval_sums(model, batch)
    best = [int(torch.argmax(logits[i])) for i in range(6)]
    correct = sum(int(batch["labels"][best[i]] == batch["labels"][i]) for i in range(6))
    assert sums == {"loss": pytest.approx(6 * _naive_loss(logits), abs=1e-4), "count": 6, "correct": correct}


def test_contrastive_task_refuses_unpaired_examples_and_bad_options():
    model, _ = _tiny_clip()
    with pytest.raises(DataError, match="pairs images and texts"):
        make_task("contrastive").loss(model, {"pixel_values": torch.randn(2, 3, 16, 16), "labels": torch.zeros(2)})
    with pytest.raises(ConfigError, match="max_scale must be a number >= 1"):
        make_task("contrastive", {"max_scale": 0.5})


def test_after_step_clamps_the_temperature_to_the_papers_range():
    model, _ = _tiny_clip()
    task = make_task("contrastive")
    for start, expected in ((6.0, math.log(100)), (-1.0, 0.0), (2.0, 2.0)):
        model.logit_scale.data.fill_(start)
        task.after_step(model)
        assert float(model.logit_scale.detach()) == pytest.approx(expected, abs=1e-7)


def test_the_trainer_clamps_after_every_step_and_the_loss_falls(tmp_path):
    # a temperature above the cap at start: after the first optimiser step it sits at ln 100
    model, spec = _tiny_clip(logit_scale=5.0)
    config = TrainConfig(total_steps=12, batch_size=8, seq_len=13, lr=3e-3, warmup_steps=2, eval_interval=0,
                         eval_tokens=13 * 16, progress=False, out_dir=str(tmp_path))
    data = _pairs(16)
    trainer = Trainer(model, data, data, config, spec, task=make_task("contrastive"))
    first = trainer.evaluate()
    seen = []
    original = trainer.task.after_step

    def spy(m):
        original(m)
        seen.append(float(m.logit_scale.detach()))

    trainer.task.after_step = spy
    result = trainer.fit(resume=False)
    assert len(seen) == 12 and max(seen) <= math.log(100) + 1e-7 and seen[0] == pytest.approx(math.log(100))
    assert result.final_val_loss < first and "val_accuracy" in result.metrics


# ------------------------------------------------------------------------------------------------
# The family
# ------------------------------------------------------------------------------------------------
def test_clip_family_sizes_both_towers_and_counts_embeddings():
    family = FAMILIES["clip"]
    assert family.task == "contrastive"
    config = {"text_config": {"max_position_embeddings": 12, "eos_token_id": 299}, "vision_config": {"image_size": 32, "patch_size": 8,
                                                                              "d_model": 99},
              **family.config_for_size(2, 24, 4)}
    model = build_model(ModelSpec("clip", config), 300)
    text, vision = model.config.text_config, model.config.vision_config
    assert (text.vocab_size, text.d_model, text.n_layers, text.d_ff) == (300, 24, 2, 96)
    assert (vision.d_model, vision.n_layers, vision.n_heads, model.config.projection_dim) == (24, 2, 4, 24)
    embedding = sum(p.numel() for n, p in model.named_parameters() if ".embeddings." in n)
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model, "clip") == (total, total - embedding)
    assert tokens_per_example(ModelSpec("clip", config), model) == 16 + 1 + 12
    with pytest.raises(ConfigError, match="model config for 'clip'"):
        build_model(ModelSpec("clip", {"text_config": {"widht": 3}}), 10)
