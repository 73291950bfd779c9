"""``polyformer clip index | search | classify`` end to end on a tiny random CLIP folder written by
``transformers`` and a folder of generated images (with a few files that are not images),
checked against rankings computed with the ``transformers`` model directly."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from _clip_folder import save_tiny_clip
from PIL import Image, ImageDraw

from polyformer.cli import main
from polyformer.pipelines.zero_shot_image_classification import ZeroShotImageClassificationPipeline

transformers = pytest.importorskip("transformers")

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    first = save_tiny_clip(root / "clip")
    return {"clip": first, "other": save_tiny_clip(root / "other", seed=5, processor_from=first)}


@pytest.fixture()
def photos(tmp_path):
    """Shapes of four colours in two sub-folders, a corrupt PNG and two files that are not images."""
    folder = tmp_path / "photos"
    for i, (name, colour) in enumerate(COLOURS.items()):
        for j, shape in enumerate(("circle", "square")):
            path = folder / ("shapes" if j else "more") / f"{name}_{shape}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = Image.new("RGB", (40 + 4 * i, 36), (245, 245, 240))
            draw = ImageDraw.Draw(image)
            (draw.ellipse if shape == "circle" else draw.rectangle)((6, 5, 30 + 2 * i, 29), fill=colour)
            image.save(path)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    (folder / "notes.txt").write_text("holiday pictures")
    (folder / "shapes" / "list.csv").write_text("name\nred_circle\n")
    return folder


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def reference(model_folder, photo_folder, query_texts=(), query_image=None, k=5):
    """(path, cosine) of the top k images per query, computed with the transformers model directly."""
    model = transformers.CLIPModel.from_pretrained(model_folder).eval()
    processor = transformers.CLIPProcessor.from_pretrained(model_folder)
    paths = sorted(p for p in photo_folder.rglob("*.png") if p.name != "broken.png")
    with torch.no_grad():
        images = model.get_image_features(**processor(images=[Image.open(p) for p in paths], return_tensors="pt"))
        images = torch.nn.functional.normalize(getattr(images, "pooler_output", images), dim=-1)
        if query_image is not None:
            query = model.get_image_features(**processor(images=[Image.open(query_image)], return_tensors="pt"))
        else:
            query = model.get_text_features(**processor.tokenizer(list(query_texts), padding=True, return_tensors="pt"))
        query = torch.nn.functional.normalize(getattr(query, "pooler_output", query), dim=-1)
    scores = (query @ images.T).numpy()
    return [[(str(paths[i].resolve()), float(row[i])) for i in np.argsort(-row, kind="stable")[:k]] for row in scores]


def assert_hits(results, expected):
    assert len(results) == len(expected)
    for got, want in zip(results, expected):
        assert [r["path"] for r in got["results"]] == [p for p, _ in want]
        np.testing.assert_allclose([r["score"] for r in got["results"]], [s for _, s in want], atol=1e-5)


def test_index_then_search_by_text_and_by_image(capsys, tmp_path, models, photos):
    index = tmp_path / "photos.index"
    status, out, err = run(capsys, "clip", "index", photos, "--model", models["clip"], "--index", index, "--quiet")
    assert status == 0, err
    assert "8 new image(s) embedded" in out and "holds 8 image(s)" in out
    assert "broken.png" in out and "2 file(s) without an image extension" in out
    assert "warning: skipping" in err and "broken.png" in err

    texts = ["a red circle", "a blue square"]
    status, out, err = run(capsys, "clip", "search", *texts, "--top-k", 3, "--index", index, "--json")
    assert status == 0, err
    results = json.loads(out)
    assert [r["query"] for r in results] == texts
    assert_hits(results, reference(models["clip"], photos, texts, k=3))

    query = photos / "shapes" / "green_square.png"
    status, out, err = run(capsys, "clip", "search", "--image", query, "--top-k", 8, "--index", index, "--json")
    assert status == 0, err
    results = json.loads(out)
    assert_hits(results, reference(models["clip"], photos, query_image=query, k=8))
    assert results[0]["results"][0]["path"] == str(query.resolve())  # the image itself comes first
    assert results[0]["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)

    status, out, _ = run(capsys, "clip", "search", "a red circle", "--index", index, "--top-k", 2)
    lines = out.splitlines()
    assert status == 0 and lines[0] == "a red circle" and len(lines) == 3 and lines[1].split()[0] == "1"


def test_an_interrupted_index_resumes_where_it_stopped(capsys, tmp_path, models, photos, monkeypatch):
    index = tmp_path / "photos.index"
    real = ZeroShotImageClassificationPipeline.embed_images
    calls = {"n": 0}

    def interrupted(self, images):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third batch
        return real(self, images)

    monkeypatch.setattr(ZeroShotImageClassificationPipeline, "embed_images", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["clip", "index", str(photos), "--model", str(models["clip"]), "--index", str(index), "--batch-size", "2",
              "--shard-size", "2", "--quiet"])
    capsys.readouterr()
    manifest = json.loads((index / "manifest.json").read_text())
    # two batches made it to disk: broken.png (skipped, recorded) and three images
    assert sum(s["count"] for s in manifest["shards"]) == 3 and list(manifest["skipped"]) == ["broken.png"]

    embedded = []
    monkeypatch.setattr(ZeroShotImageClassificationPipeline, "embed_images",
                        lambda self, images: embedded.append(len(images)) or real(self, images))
    status, out, err = run(capsys, "clip", "index", photos, "--model", models["clip"], "--index", index, "--quiet",
                           "--json")
    assert status == 0, err
    report = json.loads(out)
    assert (report["added"], report["total"], report["ignored"]) == (5, 8, 2) and sum(embedded) == 5
    assert list(report["skipped"]) == ["broken.png"]
    status, out, err = run(capsys, "clip", "search", "a yellow square", "--index", index, "--top-k", 8, "--json")
    assert_hits(json.loads(out), reference(models["clip"], photos, ["a yellow square"], k=8))


def test_another_model_is_refused_and_the_index_kept(capsys, tmp_path, models, photos):
    index = tmp_path / "photos.index"
    assert run(capsys, "clip", "index", photos, "--model", models["clip"], "--index", index, "--quiet")[0] == 0
    before = {p.name: p.read_bytes() for p in index.iterdir()}
    status, _, err = run(capsys, "clip", "index", photos, "--model", models["other"], "--index", index, "--quiet")
    assert status == 2 and "built with" in err and "not comparable" in err
    status, _, err = run(capsys, "clip", "search", "a red circle", "--model", models["other"], "--index", index)
    assert status == 2 and "not comparable" in err
    assert {p.name: p.read_bytes() for p in index.iterdir()} == before


def test_folders_without_images_and_missing_indexes_are_named(capsys, tmp_path, models):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("hello")
    status, _, err = run(capsys, "clip", "index", texts, "--model", models["clip"], "--index", tmp_path / "i")
    assert status == 2 and "no images to index" in err and not (tmp_path / "i").exists()
    status, _, err = run(capsys, "clip", "search", "cat", "--index", tmp_path / "nowhere")
    assert status == 2 and "not an image index" in err
    status, _, err = run(capsys, "clip", "index", texts, "--model", tmp_path / "no-model")
    assert status == 2 and "no such model folder" in err


def test_search_arguments_are_checked(capsys, tmp_path, models, photos):
    index = tmp_path / "photos.index"
    assert run(capsys, "clip", "index", photos, "--model", models["clip"], "--index", index, "--quiet")[0] == 0
    status, _, err = run(capsys, "clip", "search", "--index", index)
    assert status == 2 and "give texts" in err
    status, _, err = run(capsys, "clip", "search", "cat", "--index", index, "--top-k", 0)
    assert status == 2 and "top_k" in err
    if importlib.util.find_spec("faiss") is None:
        status, _, err = run(capsys, "clip", "search", "cat", "--index", index, "--backend", "faiss")
        assert status == 2 and "pip install faiss-cpu" in err


def test_classify_prints_the_pipelines_scores(capsys, models, photos):
    images = [photos / "more" / "red_circle.png", photos / "shapes" / "blue_square.png"]
    labels = ["red circle", "blue square", "green thing"]
    status, out, err = run(capsys, "clip", "classify", *images, "--model", models["clip"], "--labels", *labels,
                           "--template", "a photo of a {}.", "--template", "a drawing of a {}.", "--json")
    assert status == 0, err
    from polyformer.pipelines import pipeline

    want = pipeline("zero-shot-image-classification", model=models["clip"])(
        [str(p) for p in images], candidate_labels=labels, hypothesis_template=["a photo of a {}.", "a drawing of a {}."])
    assert [r["predictions"] for r in json.loads(out)] == want
    status, _, err = run(capsys, "clip", "classify", images[0], "--model", models["clip"], "--labels", "cat", "cat")
    assert status == 2 and "duplicates" in err
