"""Pictures of attention patterns: the (N, N) mask, query rows down and key columns across."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from polyformer.attention.patterns import Pattern  # noqa: E402
from polyformer.files import save_figure  # noqa: E402

_CMAP = ListedColormap(["#f4f4f4", "#1f5fa8"])


def _draw(ax, pattern: Pattern, n: int, head: int, title: str) -> None:
    mask = pattern.dense(n, head + 1)[head] if pattern.heads(head + 1) > 1 else pattern.dense(n)
    ax.imshow(mask.numpy(), cmap=_CMAP, vmin=0, vmax=1, interpolation="nearest")
    density = mask.float().mean().item()
    ax.set_title(f"{title}\n{density:.0%} of pairs", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_pattern(pattern: Pattern, n: int, out: str | Path, *, heads: int = 1, title: str | None = None) -> Path:
    """Save a PNG of ``pattern``'s mask at length ``n`` (one panel per head when ``heads`` > 1)."""
    heads = heads if pattern.heads(heads) > 1 else 1
    fig, axes = plt.subplots(1, heads, figsize=(3.4 * heads, 3.9), squeeze=False)
    for h in range(heads):
        _draw(axes[0, h], pattern, n, h, f"head {h}" if heads > 1 else f"N = {n}")
    fig.suptitle(title or pattern.label, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


def draw_gallery(patterns: Sequence[tuple[str, Pattern]], n: int, out: str | Path, columns: int = 4) -> Path:
    """Several named patterns side by side, as in the chapter's figures of atoms and composites."""
    rows = -(-len(patterns) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, pattern) in zip(axes.flat, patterns):
        ax.axis("on")
        _draw(ax, pattern, n, 0, name)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)
