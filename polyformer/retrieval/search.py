"""Nearest images of query vectors in an :class:`~polyformer.retrieval.index.ImageIndex`, by cosine.

The default backend is exact: the index is read shard by shard (memory-mapped) in blocks of at
most ``block_rows`` rows, each block scored with one matrix product and merged into a running
top-k, so memory stays at one block however large the index is; a few hundred thousand images
take well under a second per query batch. ``backend="faiss"`` hands the same vectors to a FAISS
flat inner-product index (exact too, faster on many queries) when the ``faiss`` package is
installed. With the exact backend, equal scores keep the image earlier in the index first, so
results are deterministic.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from polyformer.errors import ConfigError, DataError, ShapeError
from polyformer.retrieval.index import ImageIndex, unit_rows

__all__ = ["BACKENDS", "SearchHit", "search_index", "top_k_cosine"]

BACKENDS = ("exact", "faiss")


@dataclass(frozen=True)
class SearchHit:
    """One result: the image's path and its cosine similarity to the query."""

    path: str
    score: float


def top_k_cosine(queries: np.ndarray, blocks: Iterable[np.ndarray], k: int,
                 block_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of shape (queries, min(k, rows in all blocks)): the best rows per query, best first.

    ``queries`` and every block are scaled to unit length, so scores are cosine similarities;
    ``rows`` count across the blocks in order. Equal scores keep the earlier row first.
    """
    queries = unit_rows(np.atleast_2d(queries))
    best_scores = np.zeros((queries.shape[0], 0), np.float32)
    best_rows = np.zeros((queries.shape[0], 0), np.int64)
    offset = 0
    for block in blocks:
        for start in range(0, block.shape[0], block_rows):
            part = unit_rows(np.asarray(block[start:start + block_rows]))
            if part.shape[1] != queries.shape[1]:
                raise ShapeError(f"queries of size {queries.shape[1]} for vectors of size {part.shape[1]}")
            scores = queries @ part.T  # (Q, n)
            if scores.shape[1] > k:
                scores, keep = _block_candidates(scores, k)
            else:
                keep = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
            best_scores, best_rows = _merge(best_scores, best_rows, scores, keep + offset, k)
            offset += part.shape[0]
    return best_scores, best_rows


def _block_candidates(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, every column scoring at least its k-th best (ties at the cut included, so the
    merge can prefer the earlier row), in column order; rows with fewer are padded with -inf."""
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1:k]  # (Q, 1)
    chosen = scores >= kth
    width = int(chosen.sum(axis=1).max())
    # a stable sort of "not chosen" puts each row's chosen columns first, in column order
    columns = np.argsort(~chosen, axis=1, kind="stable")[:, :width]
    picked = np.take_along_axis(scores, columns, axis=1)
    picked[~np.take_along_axis(chosen, columns, axis=1)] = -np.inf
    return picked, columns


def _merge(scores_a: np.ndarray, rows_a: np.ndarray, scores_b: np.ndarray, rows_b: np.ndarray,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    scores, rows = np.concatenate([scores_a, scores_b], axis=1), np.concatenate([rows_a, rows_b], axis=1)
    # sort by score (descending), then by row, and keep the first k
    order = np.lexsort((rows, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


def search_index(index: ImageIndex, queries: np.ndarray, top_k: int = 5, backend: str = "exact") -> list[list[SearchHit]]:
    """The ``top_k`` images of ``index`` nearest to each query vector (rows of ``queries``), best first.

    The query vectors must come from the model the index was built with (the caller checks the
    fingerprint: :meth:`ImageIndex.check_model`).
    """
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if len(index) == 0:
        raise DataError(f"the index at {index.path} holds no images; run `polyformer clip index` first")
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if queries.shape[1] != index.manifest.dim:
        raise ShapeError(f"query vectors of size {queries.shape[1]}, but the index holds vectors of size "
                         f"{index.manifest.dim}: the query was embedded by another model")
    paths: list[str] = []
    shards = []
    for shard_paths, vectors in index.shards():
        paths.extend(shard_paths)
        shards.append(vectors)
    if backend == "faiss":
        scores, rows = _faiss_search(queries, shards, top_k)
    else:
        scores, rows = top_k_cosine(queries, shards, top_k)
    root = Path(index.manifest.root)
    return [[SearchHit(str(root / paths[r]), float(s)) for s, r in zip(score_row, row)]
            for score_row, row in zip(scores, rows)]


def _faiss_search(queries: np.ndarray, shards: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        faiss = importlib.import_module("faiss")
    except ImportError:
        raise ConfigError("backend 'faiss' needs the faiss package, which is not installed: pip install faiss-cpu "
                          "(or faiss-gpu); or use the exact backend (the default), fine up to a few hundred "
                          "thousand images") from None
    vectors = np.ascontiguousarray(np.concatenate(shards), dtype=np.float32)  # unit rows already
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    scores, rows = flat.search(np.ascontiguousarray(unit_rows(queries)), min(k, vectors.shape[0]))
    return scores, rows.astype(np.int64)
