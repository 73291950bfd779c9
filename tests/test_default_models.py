"""Default models: pipeline(task) without a model uses the folder registered for the task."""

from __future__ import annotations

import json

import pytest

from polyformer.errors import CheckpointError, ConfigError


@pytest.fixture()
def models_root(tmp_path, monkeypatch):
    root = tmp_path / "defaults"
    monkeypatch.setenv("POLYFORMER_MODELS", str(root))
    return root


def _vit_folder(path, n_labels=3):
    from polyformer.models.vit import ViTConfig, ViTForImageClassification
    from polyformer.processors.image import ImageProcessor

    config = ViTConfig(image_size=16, patch_size=8, num_channels=3, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                       id2label={str(i): f"class {i}" for i in range(n_labels)})
    ViTForImageClassification(config).save_pretrained(path, processor=ImageProcessor(size={"height": 16,
                                                                                             "width": 16}))
    (path / "training").mkdir()  # a recipe's trainer folder: not part of the model
    (path / "training" / "checkpoint.pt").write_bytes(b"x")
    return path


def test_no_default_names_the_recipe_and_the_command(models_root):
    from polyformer import pipeline

    with pytest.raises(ConfigError, match=r"polyformer train table-qa --out runs/table-qa.*"
                                          r"polyformer models set-default table-question-answering FOLDER"):
        pipeline("table-question-answering")


def test_set_default_copies_the_model_files_and_the_pipeline_uses_them(models_root, tmp_path):
    import numpy as np
    from PIL import Image

    from polyformer import pipeline
    from polyformer.pipelines.defaults import default_model, default_models, set_default_model

    source = _vit_folder(tmp_path / "run")
    target = set_default_model("image-classification", source)
    assert target == models_root / "image-classification" == default_model("image-classification")
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in source.iterdir() if p.is_file())
    assert default_models() == {"image-classification": target}
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8))
    assert pipeline("image-classification")(image) == pipeline("image-classification", model=source)(image)

    # deleting the run folder leaves the default in place; registering again replaces it whole
    import shutil

    shutil.rmtree(source)
    assert (target / "model.safetensors").is_file()
    set_default_model("image-classification", _vit_folder(tmp_path / "other", n_labels=5))
    labels = json.loads((target / "config.json").read_text())["id2label"]
    assert len(labels) == 5 and not list(models_root.glob(".*"))  # no staging or retired copy left behind


def test_bad_registrations_are_named(models_root, tmp_path):
    from polyformer.pipelines.defaults import set_default_model

    with pytest.raises(CheckpointError, match="not a model folder"):
        set_default_model("image-classification", tmp_path)
    with pytest.raises(ConfigError, match="unknown task 'image-clasification'"):
        set_default_model("image-clasification", tmp_path)


def test_the_models_command(models_root, tmp_path, capsys):
    from polyformer.cli import main

    source = _vit_folder(tmp_path / "run")
    assert main(["models", "set-default", "image-classification", str(source)]) == 0
    assert main(["models", "defaults"]) == 0
    out = capsys.readouterr().out
    assert f"image-classification             {models_root / 'image-classification'}" in out
    assert "video-classification             (none; make one with: polyformer train video-digits" in out
