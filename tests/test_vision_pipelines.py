"""image-classification and image-completion pipelines, and the classify-image / complete-image commands."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import polyformer
from polyformer.cli import main
from polyformer.errors import CheckpointError, ConfigError, DataError
from polyformer.models.igpt import ImageGPTConfig
from polyformer.pipelines.image_completion import completion_grid
from polyformer.processors import ImageGPTProcessor, ImageProcessor, fit_palette

transformers = pytest.importorskip("transformers")

LABELS = {0: "tabby cat", 1: "golden retriever", 2: "goldfish", 3: "tree frog", 4: "teapot", 5: "sports car", 6: "volcano"}


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    """A tiny random ViT saved by transformers, with a preprocessor_config.json and an id2label."""
    folder = tmp_path_factory.mktemp("vit")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64, id2label=LABELS,
                                    label2id={v: k for k, v in LABELS.items()})
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1.0)  # spread the scores so the order is clear
    model.save_pretrained(folder)
    ImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture()
def photo(tmp_path):
    y, x = np.mgrid[0:48, 0:64]
    array = np.stack([x * 4 % 256, y * 5 % 256, (x * y) % 256], -1).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(array).save(path, quality=95)
    return path


def test_the_chapter_example_works_unchanged_apart_from_the_import(vit_folder, photo, capsys):
    image = Image.open(photo)
    # -- the chapter's code, with `from polyformer import pipeline` ------------------------------
    from polyformer import pipeline

    image_classifier = pipeline("image-classification", model=str(vit_folder))
    preds = image_classifier(image)
    preds_df = pd.DataFrame(preds)
    print(preds_df)
    # ---------------------------------------------------------------------------------------------
    assert list(preds_df.columns) == ["label", "score"] and len(preds_df) == 5
    printed = capsys.readouterr().out
    assert preds[0]["label"] in printed and set(preds_df["label"]) <= set(LABELS.values())
    hf = transformers.pipeline("image-classification", model=str(vit_folder))
    expected = hf(image)
    assert [p["label"] for p in preds] == [p["label"] for p in expected]
    np.testing.assert_allclose([p["score"] for p in preds], [p["score"] for p in expected], atol=1e-5)


def test_paths_arrays_lists_top_k_and_function(vit_folder, photo):
    classifier = polyformer.pipeline("image-classification", model=vit_folder)
    single = classifier(str(photo), top_k=3)
    assert len(single) == 3 and single[0]["score"] >= single[1]["score"] >= single[2]["score"]
    many = classifier([str(photo), np.asarray(Image.open(photo)), Image.open(photo).convert("L")], top_k=100)
    assert len(many) == 3 and all(len(r) == len(LABELS) for r in many)  # top_k is capped at the classes
    assert abs(sum(p["score"] for p in many[0]) - 1) < 1e-5  # softmax over every class
    assert [p["label"] for p in many[0]] == [p["label"] for p in many[1]]
    raw = classifier(str(photo), function_to_apply="none", top_k=1)[0]["score"]
    logits = classifier.logits([str(photo)])[0]
    assert raw == pytest.approx(float(logits.max()))
    with pytest.raises(ConfigError, match="top_k must be a positive integer"):
        classifier(str(photo), top_k=0)


def test_bad_images_and_folders_are_named(vit_folder, tmp_path):
    classifier = polyformer.pipeline("image-classification", model=vit_folder)
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataError, match="scan.png"):
        classifier(str(bad))
    (tmp_path / "noproc").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "noproc" / name).write_bytes((vit_folder / name).read_bytes())
    with pytest.raises(DataError, match=r"preprocessor_config.json is missing.*save_pretrained\(folder\)"):
        polyformer.pipeline("image-classification", model=tmp_path / "noproc")
    (tmp_path / "noproc" / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5], "image_std": [0.5]}))
    with pytest.raises(ConfigError, match="num_channels=3"):
        polyformer.pipeline("image-classification", model=tmp_path / "noproc")
    with pytest.raises(CheckpointError, match="no such model folder"):
        polyformer.pipeline("image-classification", model=tmp_path / "missing")


def test_classify_image_command(vit_folder, photo, capsys):
    assert main(["classify-image", str(photo), "--model", str(vit_folder), "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert str(photo) in out and len(out.strip().splitlines()) == 3
    assert main(["classify-image", str(photo), "--model", str(vit_folder), "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert len(parsed[0]["predictions"]) == 5
    assert main(["classify-image", "nothing.png", "--model", str(vit_folder)]) == 2
    assert "nothing.png: no such image file" in capsys.readouterr().err


# -- iGPT ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def igpt_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("igpt")
    clusters = fit_palette(np.random.default_rng(0).uniform(-1, 1, (400, 3)), 6)
    config = transformers.ImageGPTConfig(vocab_size=7, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(0)
    transformers.ImageGPTForCausalImageModeling(config).save_pretrained(folder)
    ImageGPTProcessor(size={"height": 8, "width": 8}, clusters=clusters).save_pretrained(folder)
    return folder


def test_image_completion_keeps_the_visible_rows(igpt_folder, photo):
    completer = polyformer.pipeline("image-completion", model=igpt_folder, num_samples=3)
    result = completer(str(photo))
    assert set(result) == {"original", "prompt", "completions"} and len(result["completions"]) == 3
    original = np.asarray(result["original"])
    for completion in result["completions"]:
        assert completion.size == (8, 8)
        np.testing.assert_array_equal(np.asarray(completion)[:4], original[:4])  # the top half is the prompt
    again = completer(str(photo))  # seeded: the same samples
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(result["completions"], again["completions"]))
    grid = completion_grid([result, result], scale=2)
    assert grid.size == (5 * (16 + 2) + 2, 2 * (16 + 2) + 2)
    assert len(completer.sample(2)) == 2


def test_image_completion_rejects_a_mismatched_palette(igpt_folder):
    model = polyformer.from_pretrained(igpt_folder)
    wrong = ImageGPTProcessor(size={"height": 8, "width": 8}, clusters=np.zeros((3, 3)) + np.arange(3)[:, None] / 3)
    with pytest.raises(ConfigError, match="3 clusters but the model's vocab_size 7"):
        polyformer.pipeline("image-completion", model=model, processor=wrong)
    with pytest.raises(ConfigError, match="visible"):
        polyformer.pipeline("image-completion", model=igpt_folder)(np.zeros((8, 8), np.uint8), visible=1.5)


def test_complete_image_command(igpt_folder, photo, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["complete-image", str(photo), str(photo), "--model", str(igpt_folder), "--out", str(out),
                 "--samples", "2"]) == 0
    assert Image.open(out).size == (4 * (32 + 2) + 2, 2 * (32 + 2) + 2)


def test_igpt_classifier_behind_the_classification_pipeline(tmp_path):
    config = ImageGPTConfig(vocab_size=5, n_positions=16, d_model=16, n_layers=1, n_heads=2, id2label={0: "even", 1: "odd"})
    from polyformer.models.igpt import ImageGPTForImageClassification

    model = ImageGPTForImageClassification(config)
    processor = ImageGPTProcessor(size={"height": 4, "width": 4}, clusters=fit_palette(np.random.default_rng(1).uniform(-1, 1, (50, 3)), 4))
    preds = polyformer.pipeline("image-classification", model=model, processor=processor)(np.zeros((9, 9, 3), np.uint8))
    assert [p["label"] for p in preds] in (["even", "odd"], ["odd", "even"])
    ids = processor(np.zeros((9, 9, 3), np.uint8))["input_ids"]
    expected = model(ids).logits.softmax(-1)[0]
    assert preds[0]["score"] == pytest.approx(float(expected.max().detach()), abs=1e-6)
