"""An image index on disk: unit-length embeddings in shards, and a manifest that commits them.

Layout of an index folder::

    manifest.json             what is committed: images folder, model fingerprint, shards, skipped files
    shard-00000.npy           (n, dim) float32 unit vectors, one row per image
    shard-00000.paths.json    the n image paths, relative to the images folder, in row order

A shard is written first (each file atomically) and becomes part of the index only when the
manifest that lists it is renamed into place, so a run killed at any moment leaves the index as
it was after the last committed shard: at most the shard in progress is lost, and a file left
half-written is never read. The manifest records a fingerprint of the model that made the
vectors; vectors of another model live in another space, so adding to or searching an index with
a different model raises :class:`IndexMismatchError` and writes nothing.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from polyformer.errors import ConfigError, DataError, ShapeError
from polyformer.files import atomic_write_bytes, atomic_write_text

__all__ = ["FORMAT", "MANIFEST", "ImageIndex", "IndexManifest", "IndexMismatchError", "ShardError", "is_index"]

MANIFEST = "manifest.json"
FORMAT = "polyformer-image-index"
VERSION = 1


class IndexMismatchError(ConfigError):
    """The index was built with another model (or from another images folder) than the one given."""


class ShardError(DataError):
    """A shard the manifest lists is missing or does not hold what the manifest says."""


@dataclass
class IndexManifest:
    """What ``manifest.json`` holds; only what it lists is part of the index."""

    root: str  # the images folder, absolute
    fingerprint: str  # of the model that made every vector
    model: str | None = None  # that model's folder, so a search needs no --model
    dim: int | None = None  # length of each vector (known once the first shard is written)
    shards: list[dict[str, Any]] = field(default_factory=list)  # {"name": "shard-00000", "count": n}
    # relative path -> {"reason", "size", "mtime_ns"}: retried only when the file changes
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION

    @classmethod
    def from_json(cls, raw: Any, where: Path) -> "IndexManifest":
        """Parse a manifest, refusing anything that is not one (or a newer version)."""
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise DataError(f"{where} is not a polyformer image index manifest; pass the folder that "
                            "`polyformer clip index` wrote (--index)")
        if raw.get("version") != VERSION:
            raise DataError(f"{where}: index format version {raw.get('version')!r}; this polyformer reads version "
                            f"{VERSION}. Build the index again with `polyformer clip index`")
        try:
            return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
        except TypeError as error:
            raise DataError(f"{where} is incomplete ({error}); build the index again with `polyformer clip index`") from None


def is_index(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding an index manifest."""
    return (Path(path) / MANIFEST).is_file()


class ImageIndex:
    """An index folder: its manifest, and its committed shards read on demand."""

    def __init__(self, path: str | Path, manifest: IndexManifest) -> None:
        self.path = Path(path)
        self.manifest = manifest

    # -- opening and creating -----------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "ImageIndex":
        """Open an existing index; :class:`DataError` if ``path`` holds none."""
        path = Path(path)
        file = path / MANIFEST
        if not file.is_file():
            what = "no such folder" if not path.exists() else f"no {MANIFEST} in it"
            raise DataError(f"{path}: not an image index ({what}); build one with "
                            "`polyformer clip index IMAGES_DIR --model DIR --index PATH`")
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{file} is not valid JSON ({error}); build the index again") from None
        return cls(path, IndexManifest.from_json(raw, file))

    @classmethod
    def open_or_create(cls, path: str | Path, root: str | Path, fingerprint: str, model: str | None = None) -> "ImageIndex":
        """The index at ``path`` for images under ``root`` made by the model ``fingerprint``.

        An existing index must have been built from the same folder with the same model
        (:class:`IndexMismatchError` otherwise, and nothing is written); a new one gets its
        manifest at once, so a second run knows what it is resuming.
        """
        path, root = Path(path), Path(root).resolve()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--index {path} is a file; give a folder for the index")
        if is_index(path):
            index = cls.open(path)
            index.check_model(fingerprint, model)
            if Path(index.manifest.root) != root:
                raise IndexMismatchError(
                    f"the index at {path} holds images of {index.manifest.root}, not {root}; give another --index "
                    "for this folder (an index covers one images folder)")
            if model is not None and index.manifest.model != model:
                index.manifest.model = model  # same weights, moved folder: search finds it at the new place
                index._write_manifest()
            return index
        if path.is_dir() and any(path.iterdir()):
            raise ConfigError(f"--index {path} is a folder that is not empty and holds no {MANIFEST}; give an "
                              "empty or new folder, so that nothing in it is overwritten")
        index = cls(path, IndexManifest(root=str(root), fingerprint=fingerprint, model=model))
        index._write_manifest()
        return index

    def check_model(self, fingerprint: str, model: str | None = None) -> None:
        """Refuse a model whose vectors would not be comparable with the index's."""
        if fingerprint != self.manifest.fingerprint:
            built = self.manifest.model or "another model"
            raise IndexMismatchError(
                f"the index at {self.path} was built with {built} (fingerprint {self.manifest.fingerprint[:12]}), "
                f"not {model or 'this model'} (fingerprint {fingerprint[:12]}): embeddings of different models are "
                "not comparable. Search with the model the index was built with, or build a new index with "
                "another --index (the existing one is left as it is)")

    # -- what is committed --------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(int(s["count"]) for s in self.manifest.shards)

    @property
    def root(self) -> Path:
        """The images folder the paths are relative to."""
        return Path(self.manifest.root)

    def shard(self, entry: dict[str, Any]) -> tuple[list[str], np.ndarray]:
        """(relative paths, (n, dim) float32 vectors) of one committed shard, checked against the manifest.

        The vectors are memory-mapped: a search reads them shard by shard instead of holding the
        whole index in memory.
        """
        name, count = entry["name"], int(entry["count"])
        vectors_file, paths_file = self.path / f"{name}.npy", self.path / f"{name}.paths.json"
        try:
            vectors = np.load(vectors_file, mmap_mode="r", allow_pickle=False)
            paths = json.loads(paths_file.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise ShardError(f"{self.path}: shard {name} is missing or corrupt ({error}); run `polyformer clip "
                             "index` on the same folder again to embed its images anew") from None
        if (vectors.dtype != np.float32 or vectors.shape != (count, self.manifest.dim)
                or not isinstance(paths, list) or len(paths) != count):
            raise ShardError(f"{self.path}: shard {name} does not hold the {count} vectors of size "
                             f"{self.manifest.dim} its manifest lists; run `polyformer clip index` on the same folder "
                             "again to embed its images anew")
        return paths, vectors

    def shards(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """Every committed shard in order (:class:`ShardError` on the first bad one)."""
        for entry in self.manifest.shards:
            yield self.shard(entry)

    def indexed_paths(self, repair: bool = False) -> set[str]:
        """Relative paths of every image in a committed shard.

        With ``repair``, a shard that cannot be read is dropped from the manifest (its images are
        then embedded again by the caller) instead of raising.
        """
        seen: set[str] = set()
        kept = []
        for entry in self.manifest.shards:
            try:
                paths, _ = self.shard(entry)
            except ShardError:
                if not repair:
                    raise
                continue
            seen.update(paths)
            kept.append(entry)
        if len(kept) != len(self.manifest.shards):
            self.manifest.shards = kept
            self._write_manifest()
        return seen

    # -- committing ---------------------------------------------------------------------------
    def add_shard(self, paths: list[str], vectors: np.ndarray, skipped: dict[str, dict[str, Any]] | None = None) -> None:
        """Write one shard and commit it (with newly skipped files) by rewriting the manifest.

        ``vectors`` are scaled to unit length here, so every search is a dot product.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(paths):
            raise ShapeError(f"a shard needs one vector per image: {len(paths)} paths, vectors of shape "
                             f"{tuple(vectors.shape)}")
        dim = self.manifest.dim
        if dim is not None and vectors.shape[1] != dim:
            raise ShapeError(f"vectors of size {vectors.shape[1]} for an index of size {dim}")
        if not np.isfinite(vectors).all():
            raise DataError("the model gave non-finite (NaN or infinite) embeddings; nothing was written")
        if paths:
            name = self._next_shard_name()
            buffer = io.BytesIO()
            np.save(buffer, unit_rows(vectors), allow_pickle=False)
            atomic_write_bytes(self.path / f"{name}.npy", buffer.getvalue())
            atomic_write_text(self.path / f"{name}.paths.json", json.dumps(paths, ensure_ascii=False))
            self.manifest.dim = vectors.shape[1]
            self.manifest.shards.append({"name": name, "count": len(paths)})
        for path in paths:
            self.manifest.skipped.pop(path, None)
        self.manifest.skipped.update(skipped or {})
        self._write_manifest()

    def _next_shard_name(self) -> str:
        numbers = [int(s["name"].rsplit("-", 1)[1]) for s in self.manifest.shards]
        return f"shard-{max(numbers, default=-1) + 1:05d}"

    def _write_manifest(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / MANIFEST, json.dumps(asdict(self.manifest), indent=1, ensure_ascii=False))


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (an all-zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def file_state(path: Path) -> dict[str, int]:
    """Size and modification time: enough to notice that a skipped file was replaced."""
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
