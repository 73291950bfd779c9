"""``polyformer attention bench``: time and peak memory of mechanisms against dense SDPA in one run.

Each (case, N, pass) runs in a fresh process (:mod:`polyformer.bench.measure`). A case names its
baseline case (dense SDPA with the same causality), so every record carries the baseline's time
from the same run and the speed-up over it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tqdm import tqdm

from polyformer.bench.measure import run_isolated, time_and_memory
from polyformer.files import save_figure

PASSES = ("forward", "forward+backward")


@dataclass(frozen=True)
class Case:
    """One benchmarked configuration. ``kind`` is "mechanism", "flex" or "hf_longformer"/"hf_bigbird"."""

    label: str
    mechanism: str = "dense"
    options: dict[str, Any] = field(default_factory=dict)
    causal: bool = False
    baseline: str | None = None
    kind: str = "mechanism"
    #: largest N this case is run at (dense attention grows quadratically)
    max_n: int | None = None

    def __hash__(self) -> int:
        return hash(self.label)


LONGFORMER_GLOBAL = tuple(range(8))


def default_cases(max_dense_n: int = 16384, hf: bool = True) -> list[Case]:
    """Dense baselines, the configurations that have targets, every atom and the approximate mechanisms."""
    cases = [
        Case("dense causal", causal=True, max_n=max_dense_n),
        Case("dense", max_n=max_dense_n),
        Case("sliding_window 512 causal", "sliding_window", {"window": 512}, True, "dense causal"),
        Case("flex sliding_window 512 causal", "sliding_window", {"window": 512}, True, "dense causal",
             kind="flex", max_n=16384),
        Case("longformer 512 + 8 global", "longformer", {"window": 512, "global_tokens": LONGFORMER_GLOBAL},
             baseline="dense"),
        Case("bigbird itc 64/3/2/3", "bigbird",
             {"block_size": 64, "window_blocks": 3, "global_blocks": 2, "random_blocks": 3}, baseline="dense"),
        Case("flex bigbird itc 64/3/2/3", "bigbird",
             {"block_size": 64, "window_blocks": 3, "global_blocks": 2, "random_blocks": 3}, baseline="dense",
             kind="flex", max_n=16384),
        Case("dilated 128 x2", "dilated", {"window": 128, "dilation": 2}, baseline="dense"),
        Case("random 32", "random", {"count": 32}, baseline="dense"),
        Case("block_local 512", "block_local", {"size": 512}, baseline="dense"),
        Case("global 8", "global", {"tokens": LONGFORMER_GLOBAL}, baseline="dense"),
        Case("memory_efficient alibi", "memory_efficient", {"score_mod": "alibi"}, baseline="dense"),
        # approximate mechanisms; lsh with reformer-pytorch's benchmark settings
        Case("lsh bucket 64 x8 shared-qk", "lsh", {"bucket_size": 64, "n_hashes": 8, "shared_qk": True},
             baseline="dense"),
        Case("linear causal", "linear", causal=True, baseline="dense causal"),
        Case("linear", "linear", baseline="dense"),
        Case("performer", "performer", baseline="dense"),
        Case("performer causal", "performer", causal=True, baseline="dense causal"),
    ]
    if hf and _transformers_available():
        cases += [
            Case("hf longformer (with projections)", kind="hf_longformer", max_n=16384),
            Case("longformer (with projections)", "longformer",
                 {"window": 512, "global_tokens": LONGFORMER_GLOBAL}, kind="projected",
                 baseline="hf longformer (with projections)", max_n=16384),
            Case("hf bigbird (with projections)", kind="hf_bigbird", max_n=16384),
            Case("bigbird (with projections)", "bigbird",
                 {"block_size": 64, "window_blocks": 3, "global_blocks": 2, "random_blocks": 3},
                 kind="projected", baseline="hf bigbird (with projections)", max_n=16384),
        ]
    return cases


def _transformers_available() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# What runs in the child process
# ------------------------------------------------------------------------------------------------


def measure_case(
    kind: str, mechanism: str, options: dict[str, Any], n: int, passes: str, causal: bool,
    batch: int = 1, heads: int = 8, dim: int = 64, repeats: int = 3, max_seconds: float = 30.0,
) -> dict[str, Any]:
    """Build inputs and the step for one case and measure it (called in a fresh process)."""
    import torch

    torch.manual_seed(0)
    backward = passes == "forward+backward"
    if kind in ("hf_longformer", "hf_bigbird", "projected"):
        module, call = _projected_module(kind, mechanism, options, n, heads, dim)
        x = torch.randn(batch, n, heads * dim, requires_grad=backward)
        inputs: tuple = (x,)

        def forward():
            return call(module, x)
    else:
        from polyformer import attention

        if kind == "flex":
            options = dict(options, backend="flex")
        attn = attention.build(mechanism, **options)
        q, k, v = (torch.randn(batch, heads, n, dim, requires_grad=backward) for _ in range(3))
        inputs = (q, k, v)

        def forward():
            return attn(q, k, v, causal=causal)

    def step():
        if backward:
            for t in inputs:
                t.grad = None
            out = forward()
            out.backward(torch.ones_like(out))
        else:
            with torch.no_grad():
                forward()

    return time_and_memory(step, repeats=repeats, max_seconds=max_seconds)


def _projected_module(kind, mechanism, options, n, heads, dim):
    """A self-attention layer with q/k/v projections: Hugging Face's, or ours around a mechanism."""
    import torch

    hidden = heads * dim
    if kind == "hf_longformer":
        from transformers import LongformerConfig
        from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

        config = LongformerConfig(hidden_size=hidden, num_attention_heads=heads, attention_window=[512])
        module = LongformerSelfAttention(config, layer_id=0)
        mask = torch.zeros(1, n)
        mask[:, : len(LONGFORMER_GLOBAL)] = 10000.0  # HF's code for "global attention"
        is_global = mask > 0

        def call(m, x):
            return m(x, attention_mask=mask, is_index_masked=mask < 0, is_index_global_attn=is_global,
                     is_global_attn=True)[0]

        return module, call
    if kind == "hf_bigbird":
        from transformers import BigBirdConfig, BigBirdModel
        from transformers.models.big_bird.modeling_big_bird import BigBirdBlockSparseAttention

        config = BigBirdConfig(hidden_size=hidden, num_attention_heads=heads, block_size=64, num_random_blocks=3,
                               attention_type="block_sparse", max_position_embeddings=max(4096, n))
        module = BigBirdBlockSparseAttention(config, seed=0)
        blocked, band, from_mask, to_mask = BigBirdModel.create_masks_for_block_sparse_attn(
            torch.ones(1, n), config.block_size
        )

        def call(m, x):
            return m(x, band_mask=band, from_mask=from_mask, to_mask=to_mask, from_blocked_mask=blocked,
                     to_blocked_mask=blocked)[0]

        return module, call

    from polyformer import attention

    attn = attention.build(mechanism, **options)
    projections = torch.nn.Linear(hidden, 3 * hidden)

    def call(m, x):
        b = x.shape[0]
        q, k, v = projections(x).view(b, n, 3, heads, dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D)
        return attn(q, k, v).transpose(1, 2).reshape(b, n, hidden)

    return attn, call


# ------------------------------------------------------------------------------------------------
# Running, tables and plots
# ------------------------------------------------------------------------------------------------


def run_bench(
    cases: Iterable[Case],
    ns: Iterable[int],
    passes: Iterable[str] = PASSES,
    *,
    threads: int = 2,
    repeats: int = 3,
    max_seconds: float = 30.0,
    shape: tuple[int, int, int] = (1, 8, 64),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Measure every (case, N, pass) in a fresh process; return one record per measurement."""
    cases, ns, passes = list(cases), list(ns), list(passes)
    batch, heads, dim = shape
    jobs = [
        (case, n, p)
        for n in ns
        for case in cases
        for p in passes
        if (case.max_n is None or n <= case.max_n)
        and not (p == "forward+backward" and case.kind in ("flex",))
    ]
    records: list[dict[str, Any]] = []
    by_key: dict[tuple[str, int, str], dict[str, Any]] = {}
    for case, n, p in tqdm(jobs, desc="attention bench", disable=not progress):
        params = dict(kind=case.kind, mechanism=case.mechanism, options=case.options, n=n, passes=p,
                      causal=case.causal, batch=batch, heads=heads, dim=dim, repeats=repeats,
                      max_seconds=max_seconds)
        result = run_isolated("polyformer.bench.attention:measure_case", params, threads=threads)
        record = {"mechanism": case.label, "n": n, "pass": p, "causal": case.causal, **result}
        base = by_key.get((case.baseline, n, p)) if case.baseline else None
        if base is not None and "ms" in base and "ms" in record:
            record["baseline"] = case.baseline
            record["baseline_ms"] = base["ms"]
            record["speedup"] = base["ms"] / record["ms"]
        by_key[(case.label, n, p)] = record
        records.append(record)
    return records


def format_table(records: list[dict[str, Any]]) -> str:
    """A plain-text table of the records."""
    header = f"{'mechanism':36s} {'N':>6s} {'pass':17s} {'ms':>10s} {'peak MB':>9s} {'speed-up':>9s}"
    lines = [header, "-" * len(header)]
    for r in records:
        ms = f"{r['ms']:.1f}" if "ms" in r else r.get("error", "?")[:10]
        mb = f"{r['peak_mb']:.0f}" if "peak_mb" in r else ""
        sp = f"{r['speedup']:.2f}x" if "speedup" in r else ""
        lines.append(f"{r['mechanism'][:36]:36s} {r['n']:6d} {r['pass']:17s} {ms:>10s} {mb:>9s} {sp:>9s}")
    return "\n".join(lines)


def plot_records(records: list[dict[str, Any]], out: str | Path) -> Path:
    """Time and peak memory against N (log-log), one line per mechanism, one panel per pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    for col, p in enumerate(PASSES):
        rows = [r for r in records if r["pass"] == p and "ms" in r]
        for label in dict.fromkeys(r["mechanism"] for r in rows):
            pts = sorted((r["n"], r["ms"], r["peak_mb"]) for r in rows if r["mechanism"] == label)
            style = "--" if label.startswith("dense") or label.startswith("hf") else "-"
            axes[0, col].plot([x[0] for x in pts], [x[1] for x in pts], style, marker="o", label=label)
            axes[1, col].plot([x[0] for x in pts], [max(x[2], 1.0) for x in pts], style, marker="o", label=label)
        axes[0, col].set_title(f"{p}: time")
        axes[1, col].set_title(f"{p}: peak memory")
        axes[0, col].set_ylabel("ms")
        axes[1, col].set_ylabel("MB")
        for ax in axes[:, col]:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length N")
            ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("attention mechanisms, B=1 H=8 D=64 fp32 (dashed: baselines)")
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


def records_to_json_lines(records: list[dict[str, Any]]) -> str:
    """One JSON object per line."""
    return "\n".join(json.dumps(r) for r in records)
