"""Embed a folder of images into an :class:`~polyformer.retrieval.index.ImageIndex`, resuming where
a previous run stopped.

The images are the files under the folder whose extension Pillow knows (other files are counted
and left alone; hidden files and the index folder itself are never read). A run embeds only
images the index does not hold yet, ``batch_size`` at a time, and commits every ``shard_size``
images, so a run that is killed loses at most one shard of work, and running again on a folder
that has gained images adds only the new ones. A file that cannot be read as an image is skipped
with an :class:`UnreadableImageWarning` and recorded in the manifest; it is tried again only once
it changes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from polyformer.errors import ConfigError, DataError
from polyformer.processors.image import load_image
from polyformer.retrieval.index import ImageIndex, file_state

__all__ = ["BuildReport", "EmbedFn", "UnreadableImageWarning", "build_index", "list_images"]

#: images -> (len(images), dim) embeddings
EmbedFn = Callable[[Sequence[Image.Image]], np.ndarray]


class UnreadableImageWarning(UserWarning):
    """A file with an image extension could not be read or embedded; it was skipped."""


@dataclass
class BuildReport:
    """What one indexing run did."""

    index: Path
    added: int = 0  # images embedded by this run
    total: int = 0  # images in the index after it
    skipped: dict[str, str] = field(default_factory=dict)  # relative path -> why, for every skipped file
    ignored: int = 0  # files without an image extension


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions Pillow can open (``.png``, ``.jpg``, ...)."""
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def list_images(root: Path, exclude: Path | None = None) -> tuple[list[str], int]:
    """(sorted relative paths of the image files under ``root``, number of other files).

    Hidden files and folders (a leading dot) and everything under ``exclude`` are left out.
    """
    extensions = image_extensions()
    exclude = exclude.resolve() if exclude is not None else None
    images, others = [], 0
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        if path.suffix.lower() in extensions:
            images.append(relative.as_posix())
        else:
            others += 1
    return sorted(images), others


def build_index(images_dir: str | Path, index_dir: str | Path, embed: EmbedFn, fingerprint: str, *,
                model: str | None = None, batch_size: int = 32, shard_size: int = 1024,
                progress: bool = True) -> BuildReport:
    """Embed every image under ``images_dir`` that the index at ``index_dir`` does not hold yet.

    ``embed`` maps a list of PIL images to one vector per image; ``fingerprint`` identifies the
    model behind it (an existing index made by another model raises
    :class:`~polyformer.retrieval.index.IndexMismatchError` before anything is written), and
    ``model`` is its folder, recorded so a search can load it. A folder without images raises
    :class:`DataError`.
    """
    root = Path(images_dir)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; give the folder of images to index")
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    images, ignored = list_images(root, exclude=Path(index_dir))
    if not images:
        found = f"{ignored} file(s), none with an image extension" if ignored else "no files"
        raise DataError(f"{root}: no images to index ({found}); give a folder of image files "
                        f"({', '.join(sorted(image_extensions() & {'.png', '.jpg', '.jpeg', '.webp', '.bmp'}))}, ...)")
    index = ImageIndex.open_or_create(index_dir, root, fingerprint, model)
    done = index.indexed_paths(repair=True)
    skipped_before = index.manifest.skipped
    todo = [p for p in images if p not in done and not _unchanged_skip(root / p, skipped_before.get(p))]
    report = BuildReport(index=index.path, ignored=ignored)
    _Run(index, root, embed, batch_size, shard_size, report).embed_all(todo, len(images) - len(todo), progress)
    report.total = len(index)
    report.skipped = {p: s["reason"] for p, s in index.manifest.skipped.items()}
    if report.total == 0:
        raise DataError(f"{root}: none of the {len(images)} image file(s) could be read (e.g. "
                        f"{next(iter(report.skipped.items()), ('', ''))[0]}: {next(iter(report.skipped.values()), '')}); "
                        "the index holds no images")
    return report


def _unchanged_skip(path: Path, record: dict[str, Any] | None) -> bool:
    """A file skipped before, and not changed since (so it would fail the same way)."""
    if record is None:
        return False
    try:
        state = file_state(path)
    except OSError:
        return True
    return state["size"] == record.get("size") and state["mtime_ns"] == record.get("mtime_ns")


class _Run:
    """One indexing run: embeds batches, collects a shard's rows, commits full shards."""

    def __init__(self, index: ImageIndex, root: Path, embed: EmbedFn, batch_size: int, shard_size: int,
                 report: BuildReport) -> None:
        self.index, self.root, self.embed = index, root, embed
        self.batch_size, self.shard_size, self.report = batch_size, shard_size, report
        self.paths: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.skipped: dict[str, dict[str, Any]] = {}

    def embed_all(self, todo: list[str], already: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        bar = tqdm(total=already + len(todo), initial=already, unit=" images", desc="indexing", disable=not progress)
        try:
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start:start + self.batch_size]
                self._embed_batch(batch)
                bar.update(len(batch))
                while len(self.paths) >= self.shard_size:
                    self._commit(self.shard_size)
            self._commit()
        except BaseException:
            # Interrupted (Ctrl-C, a failing model): the rows embedded so far are sound; keep them.
            try:
                self._commit()
            except Exception:  # the original error is the one to report
                pass
            raise
        finally:
            bar.close()

    def _embed_batch(self, batch: list[str]) -> None:
        loaded: list[tuple[str, Image.Image]] = []
        for relative in batch:
            try:
                loaded.append((relative, load_image(self.root / relative)))
            except DataError as error:
                self._skip(relative, str(error))
        if not loaded:
            return
        try:
            rows = self._vectors([image for _, image in loaded])
        except DataError:
            # One bad image fails the whole batch: embed one at a time to find and skip it.
            for relative, image in loaded:
                try:
                    self._keep([relative], self._vectors([image]))
                except DataError as error:
                    self._skip(relative, str(error))
            return
        self._keep([relative for relative, _ in loaded], rows)

    def _vectors(self, images: list[Image.Image]) -> np.ndarray:
        rows = np.asarray(self.embed(images), dtype=np.float32)
        if rows.ndim != 2 or rows.shape[0] != len(images):
            raise ConfigError(f"the embedding function returned shape {tuple(rows.shape)} for {len(images)} images; "
                              "it must return one vector per image, (images, dim)")
        return rows

    def _keep(self, paths: list[str], rows: np.ndarray) -> None:
        self.paths.extend(paths)
        self.vectors.append(rows)
        self.report.added += len(paths)

    def _skip(self, relative: str, reason: str) -> None:
        warnings.warn(f"skipping {self.root / relative}: {reason}", UnreadableImageWarning, stacklevel=2)
        try:
            state = file_state(self.root / relative)
        except OSError:
            state = {}
        self.skipped[relative] = {"reason": reason, **state}

    def _commit(self, count: int | None = None) -> None:
        """Commit the first ``count`` pending images (all by default) and every pending skip."""
        if not self.paths and not self.skipped:
            return
        dim = self.index.manifest.dim or 0
        rows = np.concatenate(self.vectors) if self.vectors else np.zeros((0, dim), np.float32)
        count = len(self.paths) if count is None else count
        self.index.add_shard(self.paths[:count], rows[:count], skipped=self.skipped)
        self.paths, self.skipped = self.paths[count:], {}
        self.vectors = [rows[count:]] if count < len(rows) else []
