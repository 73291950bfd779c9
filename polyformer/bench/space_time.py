"""The cost of attention over the frames and patches of a video: joint, divided and space-only.

A video of ``T`` frames of ``S`` patches is ``T·S`` tokens. The three ways TimeSformer attends
over them score different sets of (query, key) pairs:

* ``joint``: one attention over all ``T·S`` tokens, ``(T·S)²`` pairs;
* ``divided``: attention over the frames at each patch position (``S`` sequences of ``T``), then
  over the patches of each frame (``T`` sequences of ``S``), ``S·T² + T·S²`` pairs;
* ``space_only``: attention within each frame only, ``T·S²`` pairs (it cannot see motion).

FLOP conventions are those of :mod:`polyformer.bench.lra_flops`: a multiply-add is 2 FLOPs and only
matrix products count. Per head, ``QKᵀ`` and ``PV`` cost ``2·head_dim`` each per pair, so the
score computations of a layer cost ``4·head_dim·heads·pairs``. The projections (q, k, v and out,
``8·d_model²`` per token and attention) are counted apart: divided attention runs two attentions,
so it pays them twice, which at few frames outweighs what it saves in the scores.

:func:`measure_layer` times one forward pass of one layer (no gradients) and its peak memory in a
fresh interpreter per case (:func:`run_space_time`), as the attention benchmark does. The class
token is left out: it adds one token to a sequence and does not change how the costs grow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from polyformer.attention import AttentionSpec
from polyformer.bench.lra_flops import attention_forward_flops
from polyformer.bench.measure import run_isolated, time_and_memory
from polyformer.errors import ConfigError, ShapeError
from polyformer.files import save_figure
from polyformer.layers.attention import MultiHeadAttention
from polyformer.layers.factorised_attention import FactorisedAttention

ATTENTION_TYPES = ("joint", "divided", "space_only")


def _check_type(attention_type: str) -> None:
    if attention_type not in ATTENTION_TYPES:
        raise ConfigError(
            f"space-time attention type must be one of {', '.join(ATTENTION_TYPES)}, got {attention_type!r}"
        )


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"space-time cost: {name} must be a positive integer, got {value!r}")


def score_pairs(attention_type: str, frames: int, patches: int) -> int:
    """(query, key) pairs one head scores over a video of ``frames`` × ``patches`` tokens."""
    _check_type(attention_type)
    _check_sizes(frames=frames, patches=patches)
    if attention_type == "joint":
        return (frames * patches) ** 2
    if attention_type == "divided":
        return patches * frames**2 + frames * patches**2
    return frames * patches**2


def score_flops(attention_type: str, frames: int, patches: int, head_dim: int, n_heads: int = 1) -> int:
    """FLOPs of the score computations (``QKᵀ`` and ``PV``) of one layer, one video."""
    _check_sizes(head_dim=head_dim, n_heads=n_heads)
    return 4 * head_dim * n_heads * score_pairs(attention_type, frames, patches)


def projection_flops(attention_type: str, frames: int, patches: int, d_model: int) -> int:
    """FLOPs of the q, k, v and out projections of one layer, one video (divided has two attentions)."""
    _check_type(attention_type)
    _check_sizes(frames=frames, patches=patches, d_model=d_model)
    attentions = 2 if attention_type == "divided" else 1
    return attentions * 8 * d_model * d_model * frames * patches


def materialised_bytes(frames: int, patches: int, n_heads: int, batch: int = 1, dtype_bytes: int = 4) -> int:
    """Memory the joint layer needs when it holds its scores and probabilities, (B, H, TS, TS) each.

    That is how eager implementations (and ``output_attentions``) compute attention; fused kernels
    never hold the whole matrix.
    """
    _check_sizes(frames=frames, patches=patches, n_heads=n_heads, batch=batch, dtype_bytes=dtype_bytes)
    return 2 * batch * n_heads * (frames * patches) ** 2 * dtype_bytes


class SpaceTimeAttention(nn.Module):
    """One attention layer over a (B, T, S, d_model) video in the way ``attention_type`` names.

    ``joint`` is a :class:`MultiHeadAttention` over the flattened ``T·S`` tokens (with any registered
    ``attention`` mechanism); ``divided`` is a time :class:`FactorisedAttention` followed by a space
    one (the block's norms and residual connections between them are left out: they cost no
    attention); ``space_only`` is the space one alone.
    """

    def __init__(
        self, attention_type: str, d_model: int, n_heads: int, *, attention: AttentionSpec | str | dict | None = None,
    ) -> None:
        super().__init__()
        _check_type(attention_type)
        self.attention_type = attention_type
        self.layers = nn.ModuleList()
        if attention_type == "joint":
            self.layers.append(MultiHeadAttention(d_model, n_heads, attention=attention))
        if attention_type == "divided":
            self.layers.append(FactorisedAttention(d_model, n_heads, axis="time", attention=attention))
        if attention_type in ("divided", "space_only"):
            self.layers.append(FactorisedAttention(d_model, n_heads, axis="space", attention=attention))

    def forward(self, x: Tensor, *, output_attentions: bool = False) -> Tensor:
        """(B, T, S, d_model) -> (B, T, S, d_model).

        ``output_attentions`` (joint only) takes the path that holds the probabilities in memory,
        the cost of eager implementations.
        """
        if x.dim() != 4:
            raise ShapeError(
                f"SpaceTimeAttention: input must be (batch, frames, patches, d_model), got {tuple(x.shape)}"
            )
        if output_attentions and self.attention_type != "joint":
            raise ConfigError("SpaceTimeAttention: output_attentions is measured for joint attention only")
        if self.attention_type == "joint":
            b, t, s, d = x.shape
            tokens = x.reshape(b, t * s, d)
            out = self.layers[0](tokens, output_attentions=output_attentions)
            out = out[0] if output_attentions else out
            return out.view(b, t, s, d)
        for layer in self.layers:
            x, _ = layer(x)
        return x


# ------------------------------------------------------------------------------------------------
# Cases and what runs in the child process
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One measured configuration: an attention type, its mechanism and whether scores are held."""

    label: str
    attention_type: str
    mechanism: str = "dense"
    options: dict[str, Any] = field(default_factory=dict)
    materialise: bool = False
    #: most frames this case is run at (slow cases are capped to keep the benchmark short)
    max_frames: int | None = None

    def __hash__(self) -> int:
        return hash(self.label)


def default_cases(patches: int = 196) -> list[Case]:
    """The three attention types with dense attention, and cheaper mechanisms on the joint sequence."""
    return [
        Case("joint dense (fused)", "joint"),
        Case("joint dense (scores held)", "joint", materialise=True),
        Case("divided dense", "divided"),
        Case("space_only dense", "space_only"),
        # Exact and flat in memory, but a chunked loop in Python: over a minute per pass at 64 frames.
        Case("joint memory_efficient", "joint", "memory_efficient", max_frames=16),
        Case("joint linear", "joint", "linear"),
        Case("joint performer", "joint", "performer"),
        # Each token sees one frame's worth of tokens on either side: its neighbours in this
        # frame and the ones nearest in place in the adjacent frames. The sparse kernel at every
        # length (the automatic choice would run short sequences densely with a mask).
        Case(f"joint sliding_window {patches}", "joint", "sliding_window", {"window": patches, "backend": "kernel"}),
    ]


def case_flops(case: Case, frames: int, patches: int, d_model: int, n_heads: int) -> dict[str, float]:
    """``score_flops`` (what the case's mechanism computes) and ``projection_flops`` of one video."""
    head_dim = d_model // n_heads
    if case.mechanism in ("dense", "memory_efficient"):
        scores = float(score_flops(case.attention_type, frames, patches, head_dim, n_heads))
    elif case.attention_type == "joint":
        spec = AttentionSpec(case.mechanism, dict(case.options))
        scores = float(attention_forward_flops(spec, frames * patches, n_heads, head_dim))
    else:
        raise ConfigError(f"no FLOP count for {case.mechanism!r} along divided or space-only attention")
    projections = float(projection_flops(case.attention_type, frames, patches, d_model))
    return {"score_flops": scores, "projection_flops": projections}


def measure_layer(
    attention_type: str, frames: int, patches: int, d_model: int, n_heads: int, mechanism: str = "dense",
    options: dict[str, Any] | None = None, materialise: bool = False, batch: int = 1, repeats: int = 3,
    max_seconds: float = 20.0,
) -> dict[str, Any]:
    """Time one forward pass (no gradients) of one layer and its peak memory growth."""
    torch.manual_seed(0)
    spec = AttentionSpec(mechanism, dict(options or {}))
    layer = SpaceTimeAttention(attention_type, d_model, n_heads, attention=spec).eval()
    x = torch.randn(batch, frames, patches, d_model)

    def step() -> None:
        with torch.no_grad():
            layer(x, output_attentions=materialise)

    return time_and_memory(step, repeats=repeats, max_seconds=max_seconds)


def run_space_time(
    frames: Iterable[int] = (8, 16, 32, 64),
    patches: int = 196,
    d_model: int = 768,
    n_heads: int = 12,
    *,
    cases: Iterable[Case] | None = None,
    batch: int = 1,
    threads: int = 2,
    repeats: int = 3,
    max_seconds: float = 5.0,
    max_held_mb: float = 2048.0,
    timeout: float = 300.0,
    isolated: bool = True,
) -> list[dict[str, Any]]:
    """Measure every (case, frame count); one record each, with the FLOP counts beside the figures.

    A case that holds its scores is skipped (``"skipped"`` says why) when they would need more than
    ``max_held_mb``, and so is any case past its ``max_frames``; one that fails or runs past
    ``timeout`` seconds carries ``"error"``. Each case runs in a fresh interpreter unless
    ``isolated=False`` (quicker, but peaks then include what earlier cases left behind).
    """
    frames = list(frames)
    _check_sizes(patches=patches, d_model=d_model, n_heads=n_heads, batch=batch)
    for t in frames:
        _check_sizes(frames=t)
    if d_model % n_heads:
        raise ConfigError(f"space-time cost: d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    cases = list(cases) if cases is not None else default_cases(patches)
    records: list[dict[str, Any]] = []
    for t in frames:
        for case in cases:
            record: dict[str, Any] = {
                "case": case.label, "attention_type": case.attention_type, "mechanism": case.mechanism,
                "frames": t, "patches": patches, "tokens": t * patches,
                "score_pairs": (score_pairs(case.attention_type, t, patches)
                                if case.mechanism in ("dense", "memory_efficient") else None),
                **case_flops(case, t, patches, d_model, n_heads),
            }
            held = materialised_bytes(t, patches, n_heads, batch) / (1 << 20)
            if case.materialise:
                record["held_mb"] = held
            if case.max_frames is not None and t > case.max_frames:
                record["skipped"] = f"capped at {case.max_frames} frames to keep the run short"
            elif case.materialise and held > max_held_mb:
                record["skipped"] = (
                    f"scores and probabilities would need {held:.0f} MB, over the {max_held_mb:.0f} MB limit"
                )
            else:
                params = dict(attention_type=case.attention_type, frames=t, patches=patches, d_model=d_model,
                              n_heads=n_heads, mechanism=case.mechanism, options=dict(case.options),
                              materialise=case.materialise, batch=batch, repeats=repeats, max_seconds=max_seconds)
                if isolated:
                    record.update(run_isolated("polyformer.bench.space_time:measure_layer", params, threads=threads,
                                               timeout=timeout))
                else:
                    record.update(measure_layer(**params))
            records.append(record)
    return records


# ------------------------------------------------------------------------------------------------
# Table and figure
# ------------------------------------------------------------------------------------------------


def format_table(records: list[dict[str, Any]]) -> str:
    """A plain-text table: case, frames, tokens, score GFLOPs, ms and peak MB (or why not measured)."""
    header = f"{'case':32s} {'T':>4s} {'tokens':>7s} {'score GFLOP':>12s} {'ms':>10s} {'peak MB':>9s}"
    lines = [header, "-" * len(header)]
    for r in records:
        if "ms" in r:
            measured = f"{r['ms']:10.1f} {r['peak_mb']:9.0f}"
        else:
            measured = f"{'-':>10s} {'-':>9s}  {r.get('skipped') or r.get('error') or '?'}"
        gflop = r["score_flops"] / 1e9
        lines.append(f"{r['case'][:32]:32s} {r['frames']:4d} {r['tokens']:7d} {gflop:12.2f} {measured}")
    return "\n".join(lines)


def plot_records(records: list[dict[str, Any]], out: str | Path, title: str = "") -> Path:
    """Three panels against frames: time, peak memory and score FLOPs; one line per case.

    Skipped cases appear on the memory panel as crosses at the memory they would have needed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colours = plt.get_cmap("tab10").colors
    for i, label in enumerate(dict.fromkeys(r["case"] for r in records)):
        rows = sorted((r for r in records if r["case"] == label), key=lambda r: r["frames"])
        # Solid: exact attention of each type; dotted: other mechanisms on the joint sequence.
        line = dict(linestyle="-" if "dense" in label else ":", marker="o", color=colours[i % len(colours)],
                    label=label)
        measured = [r for r in rows if "ms" in r]
        if measured:
            ts = [r["frames"] for r in measured]
            axes[0].plot(ts, [r["ms"] for r in measured], **line)
            axes[1].plot(ts, [max(r["peak_mb"], 1.0) for r in measured], **line)
        skipped = [r for r in rows if "skipped" in r and "held_mb" in r]
        if skipped:  # what the skipped cases would have needed, from the formula
            axes[1].plot([r["frames"] for r in skipped], [r["held_mb"] for r in skipped], linestyle="none",
                         marker="x", markersize=9, color=line["color"])
        axes[2].plot([r["frames"] for r in rows], [r["score_flops"] / 1e9 for r in rows], **line)
    for ax, name, unit in zip(axes, ("time per forward pass", "peak memory", "score FLOPs"), ("ms", "MB", "GFLOP")):
        ax.set_title(name)
        ax.set_ylabel(unit)
        ax.set_xlabel("frames T")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)


def growth(records: list[dict[str, Any]], key: str = "ms") -> dict[str, float]:
    """Per case, how ``key`` grew from the fewest to the most frames measured, as a power of T.

    Joint attention should approach 2 (its scores grow with T²); space-only 1.
    """
    out: dict[str, float] = {}
    for label in dict.fromkeys(r["case"] for r in records):
        rows = sorted((r for r in records if r["case"] == label and key in r and r[key] > 0), key=lambda r: r["frames"])
        if len(rows) >= 2 and rows[-1]["frames"] > rows[0]["frames"]:
            out[label] = math.log(rows[-1][key] / rows[0][key]) / math.log(rows[-1]["frames"] / rows[0]["frames"])
    return out
