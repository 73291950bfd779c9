"""The image index (build, resume, skip, fingerprint) and exact top-k search against brute force.

The embedding is a deterministic stand-in: the mean colour of each quadrant of the image (12
numbers), so every expected ranking can be computed directly from the pixels.
"""

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polyformer.errors import ConfigError, DataError
from polyformer.processors.image import to_model_mode
from polyformer.retrieval import (ImageIndex, IndexMismatchError, ShardError, UnreadableImageWarning, build_index,
                                  model_fingerprint, search_index, top_k_cosine)
from polyformer.retrieval import index as index_module


def quadrant_means(images):
    """(n, 12): mean R, G, B of each quadrant (RGB after the processor's conversion rules)."""
    rows = []
    for image in images:
        pixels = np.asarray(to_model_mode(image, 3).resize((8, 8)), dtype=np.float64) / 255.0
        rows.append(np.concatenate([pixels[:4, :4].mean((0, 1)), pixels[:4, 4:].mean((0, 1)),
                                    pixels[4:, :4].mean((0, 1)), pixels[4:, 4:].mean((0, 1))]) + 0.01)
    return np.stack(rows)


class CountingEmbed:
    """quadrant_means that counts the images it embeds and can fail after a number of calls."""

    def __init__(self, fail_after=None, error=KeyboardInterrupt):
        self.images, self.calls, self.fail_after, self.error = 0, 0, fail_after, error

    def __call__(self, images):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise self.error()
        self.calls += 1
        self.images += len(images)
        return quadrant_means(images)


def make_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        pixels = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        name = f"{'sub/' if i % 3 == 0 else ''}img{i:03d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name)
        names.append(name)
    return sorted(names)


def brute_force(folder: Path, names: list[str], query: np.ndarray, k: int) -> list[tuple[str, float]]:
    vectors = quadrant_means([Image.open(folder / n) for n in names])
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = vectors @ (query / np.linalg.norm(query))
    order = sorted(range(len(names)), key=lambda i: (-scores[i], i))[:k]
    return [(str((folder / names[i]).resolve()), float(scores[i])) for i in order]


def assert_same_hits(hits, expected):
    assert [h.path for h in hits] == [p for p, _ in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-5)


def test_top_k_cosine_matches_brute_force_with_ties_across_blocks():
    rng = np.random.default_rng(1)
    # small integer vectors: many exact ties, which must come out earlier row first
    data = rng.integers(-2, 3, size=(300, 4)).astype(np.float32)
    data[data.sum(1) == 0] += 1
    queries = rng.integers(-2, 3, size=(7, 4)).astype(np.float32) + 0.5
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    reference = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    for k in (1, 5, 40, 300, 500):
        expected = np.array([sorted(range(300), key=lambda i: (-row[i], i))[:k] for row in reference])
        for blocks, block_rows in (([data], 65536), ([data[:123], data[123:]], 50), ([data], 7)):
            scores, rows = top_k_cosine(queries, blocks, k, block_rows=block_rows)
            assert rows.shape == (7, min(k, 300))
            np.testing.assert_allclose(scores, np.take_along_axis(reference, expected, 1), atol=1e-6)
            # same rows where scores differ by more than rounding: ties resolved by row order
            assert (rows == expected).mean() > 0.99
            tie_free = np.abs(np.diff(np.take_along_axis(reference, expected, 1), axis=1)) > 1e-6
            assert (rows[:, 1:] == expected[:, 1:])[tie_free].all()


def test_index_then_search_matches_brute_force(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    names = make_images(images, 23)
    embed = CountingEmbed()
    report = build_index(images, tmp_path / "index", embed, "fp-a", batch_size=4, shard_size=6, progress=False)
    assert (report.added, report.total, report.skipped, report.ignored) == (23, 23, {}, 0)
    index = ImageIndex.open(tmp_path / "index")
    assert [s["count"] for s in index.manifest.shards] == [6, 6, 6, 5]  # shards cut at shard_size exactly
    rng = np.random.default_rng(2)
    for k in (1, 5, 23, 50):
        query = rng.random(12)
        [hits] = search_index(index, query[None], top_k=k)
        assert_same_hits(hits, brute_force(images, names, query, k))
    # image -> image: an indexed image is its own nearest neighbour, with cosine 1
    query = quadrant_means([Image.open(images / names[7])])
    [hits] = search_index(index, query, top_k=3)
    assert hits[0].path == str((images / names[7]).resolve()) and hits[0].score == pytest.approx(1.0, abs=1e-6)
    # running again on an unchanged folder embeds nothing
    again = CountingEmbed()
    assert build_index(images, tmp_path / "index", again, "fp-a", progress=False).added == 0 and again.images == 0


def test_interrupted_run_keeps_finished_shards_and_resumes(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    names = make_images(images, 20)
    first = CountingEmbed(fail_after=3)  # Ctrl-C during the 4th batch of 3
    with pytest.raises(KeyboardInterrupt):
        build_index(images, tmp_path / "index", first, "fp", batch_size=3, shard_size=4, progress=False)
    kept = len(ImageIndex.open(tmp_path / "index"))
    assert kept == 9  # two full shards and the rows embedded before the interrupt: nothing lost
    second = CountingEmbed()
    report = build_index(images, tmp_path / "index", second, "fp", batch_size=3, shard_size=4, progress=False)
    assert second.images == 20 - kept and report.total == 20
    query = np.arange(12, dtype=float)
    [hits] = search_index(ImageIndex.open(tmp_path / "index"), query[None], top_k=20)
    assert_same_hits(hits, brute_force(images, names, query, 20))


def test_a_crash_while_committing_loses_at_most_the_shard_in_progress(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    names = make_images(images, 12)
    real = index_module.ImageIndex._write_manifest
    writes = {"n": 0}

    def crash_on_third(self):  # 1st: the new index, 2nd: shard 0; the 3rd (shard 1) never lands
        writes["n"] += 1
        if writes["n"] >= 3:
            raise OSError("disk gone")
        real(self)

    monkeypatch.setattr(index_module.ImageIndex, "_write_manifest", crash_on_third)
    with pytest.raises(OSError):
        build_index(images, tmp_path / "index", CountingEmbed(), "fp", batch_size=2, shard_size=4, progress=False)
    monkeypatch.setattr(index_module.ImageIndex, "_write_manifest", real)
    index = ImageIndex.open(tmp_path / "index")
    assert len(index) == 4 and (tmp_path / "index" / "shard-00001.npy").is_file()  # written, never committed
    resumed = CountingEmbed()
    build_index(images, tmp_path / "index", resumed, "fp", batch_size=2, shard_size=4, progress=False)
    assert resumed.images == 8
    query = np.linspace(1, 2, 12)
    [hits] = search_index(ImageIndex.open(tmp_path / "index"), query[None], top_k=12)
    assert_same_hits(hits, brute_force(images, names, query, 12))


def test_unreadable_files_are_skipped_with_a_warning_and_recorded(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    names = make_images(images, 5)
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    (images / "empty.jpg").write_bytes(b"")
    (images / "notes.txt").write_text("not an image")
    (images / ".hidden.png").write_bytes(b"junk")  # hidden: never read
    # grayscale, RGBA and 16-bit images are images: indexed like any other
    Image.new("L", (9, 9), 80).save(images / "gray.png")
    Image.new("RGBA", (9, 9), (10, 200, 30, 128)).save(images / "rgba.png")
    Image.fromarray(np.full((9, 9), 40000, dtype=np.uint16)).save(images / "deep16.png")
    with pytest.warns(UnreadableImageWarning) as caught:
        report = build_index(images, tmp_path / "index", CountingEmbed(), "fp", batch_size=4, progress=False)
    assert sorted(str(w.message).split(":")[0].split("/")[-1] for w in caught) == ["broken.png", "empty.jpg"]
    assert set(report.skipped) == {"broken.png", "empty.jpg"} and report.ignored == 1
    assert report.total == 8
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert set(manifest["skipped"]) == {"broken.png", "empty.jpg"}
    # an unchanged skipped file is not tried (nor warned about) again; a repaired one is indexed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_index(images, tmp_path / "index", CountingEmbed(), "fp", progress=False).added == 0
    Image.new("RGB", (6, 6), (1, 2, 3)).save(images / "broken.png")
    report = build_index(images, tmp_path / "index", CountingEmbed(), "fp", progress=False)
    assert report.added == 1 and set(report.skipped) == {"empty.jpg"} and report.total == 9
    index = ImageIndex.open(tmp_path / "index")
    query = quadrant_means([Image.open(images / "deep16.png")])
    [hits] = search_index(index, query, top_k=1)
    assert hits[0].path.endswith("deep16.png")
    assert len(names) == 5


def test_an_image_that_fails_inside_the_model_is_skipped_alone(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    make_images(images, 6)
    Image.new("RGB", (1, 1)).save(images / "tiny.png")

    def picky(batch):
        if any(min(image.size) < 2 for image in batch):
            raise DataError("image too small for this model")
        return quadrant_means(batch)

    with pytest.warns(UnreadableImageWarning, match="tiny.png: image too small"):
        report = build_index(images, tmp_path / "index", picky, "fp", batch_size=8, progress=False)
    assert report.total == 6 and list(report.skipped) == ["tiny.png"]


def test_folders_without_images_raise_data_error_and_write_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images to index \\(no files\\)"):
        build_index(empty, tmp_path / "i1", CountingEmbed(), "fp", progress=False)
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(3):
        (texts / f"f{i}.txt").write_text("hello")
    with pytest.raises(DataError, match="3 file\\(s\\), none with an image extension"):
        build_index(texts, tmp_path / "i2", CountingEmbed(), "fp", progress=False)
    assert not (tmp_path / "i1").exists() and not (tmp_path / "i2").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"junk")
    with pytest.warns(UnreadableImageWarning), pytest.raises(DataError, match="none of the 1 image file"):
        build_index(broken, tmp_path / "i3", CountingEmbed(), "fp", progress=False)
    with pytest.raises(DataError, match="no such folder"):
        build_index(tmp_path / "missing", tmp_path / "i4", CountingEmbed(), "fp", progress=False)


def test_another_model_is_refused_and_the_index_left_untouched(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    make_images(images, 7)
    build_index(images, tmp_path / "index", CountingEmbed(), "fp-a", model="/models/a", shard_size=3, progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "index").iterdir()}
    make_images(images, 9, seed=5)  # new images would be added by the right model...
    embed = CountingEmbed()
    with pytest.raises(IndexMismatchError, match="built with /models/a"):
        build_index(images, tmp_path / "index", embed, "fp-b", model="/models/b", progress=False)
    assert embed.calls == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "index").iterdir()} == before
    with pytest.raises(IndexMismatchError, match="not comparable"):
        ImageIndex.open(tmp_path / "index").check_model("fp-b", "/models/b")
    other = tmp_path / "other"
    other.mkdir()
    make_images(other, 2)
    with pytest.raises(IndexMismatchError, match="holds images of"):
        build_index(other, tmp_path / "index", CountingEmbed(), "fp-a", progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "index").iterdir()} == before


def test_a_folder_that_is_not_an_index_is_never_written_into(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    make_images(images, 3)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not empty"):
        build_index(images, busy, CountingEmbed(), "fp", progress=False)
    assert [p.name for p in busy.iterdir()] == ["thesis.tex"]
    with pytest.raises(DataError, match="not an image index"):
        ImageIndex.open(busy)


def test_a_corrupt_shard_is_named_by_search_and_repaired_by_indexing_again(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    names = make_images(images, 10)
    build_index(images, tmp_path / "index", CountingEmbed(), "fp", shard_size=4, progress=False)
    (tmp_path / "index" / "shard-00001.npy").write_bytes(b"garbage")
    with pytest.raises(ShardError, match="shard-00001 is missing or corrupt"):
        search_index(ImageIndex.open(tmp_path / "index"), np.ones((1, 12)), top_k=2)
    again = CountingEmbed()
    build_index(images, tmp_path / "index", again, "fp", shard_size=4, progress=False)
    assert again.images == 4
    query = np.linspace(2, 1, 12)
    [hits] = search_index(ImageIndex.open(tmp_path / "index"), query[None], top_k=10)
    assert_same_hits(hits, brute_force(images, names, query, 10))


def test_search_checks_its_arguments(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    make_images(images, 3)
    build_index(images, tmp_path / "index", CountingEmbed(), "fp", progress=False)
    index = ImageIndex.open(tmp_path / "index")
    with pytest.raises(ConfigError, match="top_k"):
        search_index(index, np.ones((1, 12)), top_k=0)
    with pytest.raises(ConfigError, match="backend"):
        search_index(index, np.ones((1, 12)), backend="annoy")
    with pytest.raises(Exception, match="size 5.*size 12"):
        search_index(index, np.ones((1, 5)))


def test_faiss_backend_matches_exact_or_says_how_to_install(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    make_images(images, 9)
    build_index(images, tmp_path / "index", CountingEmbed(), "fp", shard_size=4, progress=False)
    index = ImageIndex.open(tmp_path / "index")
    queries = np.random.default_rng(3).random((2, 12))
    if importlib.util.find_spec("faiss") is None:
        with pytest.raises(ConfigError, match="pip install faiss-cpu"):
            search_index(index, queries, top_k=3, backend="faiss")
        return
    exact, fast = search_index(index, queries, top_k=3), search_index(index, queries, top_k=3, backend="faiss")
    assert [[h.path for h in row] for row in exact] == [[h.path for h in row] for row in fast]


class FlatInnerProduct:
    """What the faiss backend uses of ``faiss.IndexFlatIP``, by brute force (faiss itself is optional)."""

    def __init__(self, dim):
        self.vectors = np.zeros((0, dim), np.float32)

    def add(self, vectors):
        assert vectors.dtype == np.float32 and vectors.flags.c_contiguous
        self.vectors = np.concatenate([self.vectors, vectors])

    def search(self, queries, k):
        scores = queries @ self.vectors.T
        rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, rows, 1), rows


def test_faiss_backend_gets_every_shard_and_maps_rows_back_to_paths(tmp_path, monkeypatch):
    import sys
    import types

    images = tmp_path / "images"
    images.mkdir()
    make_images(images, 11)
    build_index(images, tmp_path / "index", CountingEmbed(), "fp", shard_size=4, progress=False)
    index = ImageIndex.open(tmp_path / "index")
    monkeypatch.setitem(sys.modules, "faiss", types.SimpleNamespace(IndexFlatIP=FlatInnerProduct))
    queries = np.random.default_rng(4).random((3, 12))
    for k in (1, 5, 11, 20):
        fast, exact = search_index(index, queries, top_k=k, backend="faiss"), search_index(index, queries, top_k=k)
        assert [[h.path for h in row] for row in fast] == [[h.path for h in row] for row in exact]
        np.testing.assert_allclose([[h.score for h in row] for row in fast], [[h.score for h in row] for row in exact],
                                   atol=1e-6)


def test_model_fingerprint_follows_weights_and_preprocessing_not_file_headers(tmp_path):
    import torch
    from safetensors.torch import save_file

    def folder(name, weights, metadata, mean=0.5):
        path = tmp_path / name
        path.mkdir()
        save_file(weights, str(path / "model.safetensors"), metadata=metadata)
        (path / "config.json").write_text(json.dumps({"model_type": "clip", "projection_dim": 4,
                                                      "transformers_version": name}))
        (path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [mean] * 3}))
        return path

    weights = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)}
    same = model_fingerprint(folder("x", weights, {"format": "pt"}))
    assert model_fingerprint(folder("y", dict(reversed(list(weights.items()))), {"writer": "other"})) == same
    changed = {**weights, "a": weights["a"] + 1e-3}
    assert model_fingerprint(folder("z", changed, {"format": "pt"})) != same
    assert model_fingerprint(folder("w", weights, {"format": "pt"}, mean=0.4)) != same
    with pytest.raises(DataError, match="no weights file"):
        model_fingerprint(tmp_path)
