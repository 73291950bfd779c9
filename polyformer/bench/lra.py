"""A model-level efficiency table in the style of Long Range Arena (Tay et al. 2020, Table 2).

A small byte-level classifier (:mod:`polyformer.models.byte_classifier`: 4 layers, width 256,
4 heads, MLP 1024, CLS pooling) is trained for a few steps on a batch of 8 random byte sequences
of length L with each attention mechanism, every (mechanism, L) in a fresh process
(:func:`~polyformer.bench.measure.run_isolated`). A training step is forward + cross-entropy +
backward + AdamW step. Each record carries the step time (median and fastest of the timed steps,
wall clock and CPU time), the peak memory (growth of the resident set during the timed steps,
see :mod:`polyformer.bench.measure`) and the step's FLOPs split into attention and everything
else (:mod:`polyformer.bench.lra_flops`), from which the FLOP-bound ratio over dense follows.

The table itself (ratios against the dense record of the same run, goals, the published LRA
ratios) is built by :mod:`polyformer.bench.lra_table`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from torch import nn
from tqdm import tqdm

from polyformer.bench.measure import run_isolated, time_calls

#: The classifier of the table: Long Range Arena's text model (4 layers, d=256, 4 heads, MLP 1024).
MODEL = {"d_model": 256, "n_heads": 4, "n_layers": 4, "d_ff": 1024}
BATCH = 8
LENGTHS = (1024, 2048, 3072, 4096)

#: Long Range Arena, Table 2: training steps per second relative to the vanilla Transformer at 4K.
LRA_RATIOS_4K = {
    "Transformer": 1.0,
    "Local Attention": 5.3,
    "Linformer": 5.5,
    "Reformer": 0.8,
    "BigBird": 1.1,
    "Linear Transformer": 5.6,
    "Performer": 5.7,
}


@dataclass(frozen=True)
class LRACase:
    """One row of the table: a mechanism with its options, the LRA model it stands beside, a goal.

    ``min_ratio``: the steps/s ratio over dense it should reach at the longest length;
    ``min_of_bound``: or the fraction of its FLOP-bound ratio it should reach (None = no goal).
    """

    label: str
    mechanism: str
    options: dict[str, Any] = field(default_factory=dict)
    lra_model: str | None = None
    min_ratio: float | None = None
    min_of_bound: float | None = 0.75
    #: longest length this row is measured at (None = every length)
    max_n: int | None = None

    def __hash__(self) -> int:
        return hash(self.label)

    @property
    def lra_ratio(self) -> float | None:
        """LRA's published steps/s ratio at 4K of ``lra_model``."""
        return LRA_RATIOS_4K.get(self.lra_model) if self.lra_model else None


def default_cases(lsh_hashes: int = 2) -> list[LRACase]:
    """The table's rows, restricted to the mechanisms registered now (``attention.list()``).

    Pattern mechanisms use their sparse kernel at every length (``dense_below=0``); with the
    default ``dense_below=1024`` they would run as masked dense attention at 1K.
    """
    from polyformer import attention

    kernel = {"dense_below": 0}
    cases = [
        LRACase("dense (SDPA)", "dense", {}, "Transformer", min_of_bound=None),
        # LRA's local attention is block-local with 50-token blocks: ~50 keys per query. A window of
        # 32 (|q - k| < 32) gives 63.
        # Tiles of 32 (not the default 128) waste fewer of their pairs on such a narrow band.
        LRACase("sliding_window w=32", "sliding_window", {"window": 32, "tile_size": 32, **kernel},
                "Local Attention"),
        LRACase("longformer w=512 +CLS", "longformer",
                {"window": 512, "global_tokens": (0,), "tile_size": 64, **kernel}),
        LRACase("bigbird 64/3/2/3", "bigbird",
                {"block_size": 64, "window_blocks": 3, "global_blocks": 2, "random_blocks": 3, **kernel},
                "BigBird", min_ratio=2.0, min_of_bound=None),
        LRACase(f"lsh b=64 h={lsh_hashes}", "lsh", {"bucket_size": 64, "n_hashes": lsh_hashes}, "Reformer",
                min_ratio=2.0, min_of_bound=None),
        LRACase("linear (elu+1)", "linear", {}, "Linear Transformer"),
        LRACase("performer (m=266)", "performer", {}, "Performer"),
        LRACase("memory_efficient", "memory_efficient", {}),
    ]
    known = set(attention.list())
    return [case for case in cases if case.mechanism in known]


def model_config(mechanism: str, options: dict[str, Any], max_length: int, model: dict[str, Any] | None = None):
    """The classifier config of one case (CLS pooling, learned positions up to ``max_length``)."""
    from polyformer.models.byte_classifier import ByteClassifierConfig
    from polyformer.transformer import TransformerConfig

    core = TransformerConfig(**(model or MODEL), attention={"name": mechanism, "options": dict(options)})
    return ByteClassifierConfig(n_classes=2, max_length=max_length, positions="learned", pooling="cls",
                                transformer=core)


# ------------------------------------------------------------------------------------------------
# What runs in the child process
# ------------------------------------------------------------------------------------------------


def measure_training_step(
    mechanism: str, options: dict[str, Any], n: int, *, batch: int = BATCH, model: dict[str, Any] | None = None,
    warmup: int = 1, steps: int = 3, max_seconds: float = 60.0, seed: int = 0,
) -> dict[str, Any]:
    """Time ``steps`` training steps (after ``warmup`` untimed ones) of the classifier at length ``n``.

    Called in a fresh process by :func:`run_lra`. Two names stand for reference rows rather than
    registered mechanisms: ``"none"`` replaces attention by ``v`` (the time of everything else, a
    measured floor for any mechanism) and ``"materialized"`` is dense attention that forms the
    (N, N) probabilities (``reference_attention``), like LRA's vanilla Transformer.
    """
    import torch

    from polyformer.models.byte_classifier import ByteClassifier, marker_task, train_step

    torch.manual_seed(seed)
    stand_in = STAND_INS.get(mechanism)
    config = model_config("dense" if stand_in else mechanism, options, n, model)
    classifier = ByteClassifier(config)
    if stand_in is not None:
        for layer in classifier.encoder.layers:
            layer.attn.mechanism = stand_in()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(seed)
    ids, labels = marker_task(batch, n, generator=generator, cls=True)

    losses: list[float] = []

    def step() -> None:
        losses.append(train_step(classifier, optimizer, ids, labels))

    timing = time_calls(step, repeats=steps, warmup=max(1, warmup), max_seconds=max_seconds, memory=True)
    return {
        "step_ms": timing.median * 1e3,
        "step_ms_min": timing.best * 1e3,
        "cpu_ms": timing.cpu_median * 1e3,
        "runs": len(timing.wall),
        "peak_mb": timing.peak_mb,
        "loss": losses[-1],
    }


class _NoAttention(nn.Module):
    """Stands in for a mechanism and returns ``v``: what a step costs without any attention.

    ``q`` and ``k`` enter with weight zero so that their projections still get gradients (the
    backward products of every projection stay in the step, as with a real mechanism).
    """

    def forward(self, q, k, v, causal=False, key_padding_mask=None, *, bias=None, score_mod=None, scale=None,
                q_offset=None):
        return v + (q + k) * 0.0  # (B, H, N, D); no scores, so bias and score_mod have nothing to act on


class _MaterializedAttention(nn.Module):
    """Dense attention through the (N, N) probability matrix, kept for the backward pass."""

    def forward(self, q, k, v, causal=False, key_padding_mask=None, *, bias=None, score_mod=None, scale=None,
                q_offset=None):
        from polyformer.attention import reference_attention

        return reference_attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask, bias=bias,
                                   score_mod=score_mod, scale=scale, q_offset=q_offset)


#: Rows that are not registered mechanisms: each name's module replaces every layer's mechanism.
STAND_INS: dict[str, type[nn.Module]] = {"none": _NoAttention, "materialized": _MaterializedAttention}
FLOOR_CASE = LRACase("no attention (floor)", "none", {}, min_of_bound=None)


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------


def case_flops(case: LRACase, n: int, *, batch: int = BATCH, model: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keys per query, step FLOPs (attention / other) and the FLOP-bound ratio of ``case`` at ``n``."""
    from polyformer.bench.lra_flops import flop_bound, keys_per_query, training_step_flops

    core = model_config(case.mechanism, case.options, n, model).transformer
    flops = training_step_flops(core, batch, n)
    kpq = keys_per_query(core.attention, n, core.n_heads)
    return {
        "keys_per_query": kpq,
        "flops_attention": flops.attention,
        "flops_other": flops.other,
        "flop_bound": flop_bound(core, batch, n, core.attention),
    }


def run_lra(
    cases: Iterable[LRACase],
    lengths: Iterable[int] = LENGTHS,
    *,
    threads: int = 2,
    batch: int = BATCH,
    model: dict[str, Any] | None = None,
    warmup: int = 1,
    steps: int = 3,
    max_seconds: float = 60.0,
    floor: bool = False,
    materialized_max_n: int = 0,
    progress: bool = True,
    on_record=None,
) -> list[dict[str, Any]]:
    """Measure every (case, length) in a fresh process; one record each, dense first at each length.

    ``floor`` adds a "no attention" row per length (attention replaced by ``v``);
    ``materialized_max_n`` > 0 adds LRA's vanilla Transformer (dense attention through the (N, N)
    matrix, whose memory grows as N²) up to that length. ``on_record`` is
    called with each record as it arrives (e.g. to print JSON lines while the run goes on).
    """
    cases, lengths = list(cases), sorted(lengths)
    cases.sort(key=lambda c: c.mechanism != "dense")  # the baseline first at each length
    if materialized_max_n > 0:
        cases.append(LRACase("dense, materialized N² (LRA vanilla)", "materialized", {}, "Transformer",
                             min_of_bound=None, max_n=materialized_max_n))
    if floor:
        cases.append(FLOOR_CASE)
    jobs = [(case, n) for n in lengths for case in cases if case.max_n is None or n <= case.max_n]
    records: list[dict[str, Any]] = []
    for case, n in tqdm(jobs, desc="lra table", disable=not progress):
        params = dict(mechanism=case.mechanism, options=case.options, n=n, batch=batch, model=model,
                      warmup=warmup, steps=steps, max_seconds=max_seconds)
        result = run_isolated("polyformer.bench.lra:measure_training_step", params, threads=threads)
        record: dict[str, Any] = {
            "label": case.label, "mechanism": case.mechanism, "options": case.options, "n": n,
            "batch": batch, "threads": threads, "lra_model": case.lra_model, "lra_ratio_4k": case.lra_ratio,
            "min_ratio": case.min_ratio, "min_of_bound": case.min_of_bound, **result,
        }
        if case.mechanism != "none":
            flops_case = LRACase(case.label, "dense") if case.mechanism == "materialized" else case
            record.update(case_flops(flops_case, n, batch=batch, model=model))
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records


def records_to_json_lines(records: list[dict[str, Any]]) -> str:
    """One JSON object per line."""
    return "\n".join(json.dumps(r, default=list) for r in records)


__all__ = ["BATCH", "FLOOR_CASE", "LENGTHS", "LRACase", "LRA_RATIOS_4K", "MODEL", "STAND_INS", "case_flops",
           "default_cases", "measure_training_step", "model_config", "records_to_json_lines", "run_lra"]
