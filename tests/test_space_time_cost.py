"""The cost of attention over space and time: FLOP counts against a hand count and torch's counter,
each attention type against a dense reference written out by hand, and the measurement records."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from polyformer.bench.space_time import (
    ATTENTION_TYPES,
    Case,
    SpaceTimeAttention,
    format_table,
    growth,
    materialised_bytes,
    measure_layer,
    plot_records,
    projection_flops,
    run_space_time,
    score_flops,
    score_pairs,
)
from polyformer.errors import ConfigError, ShapeError


def _hand_count(attention_type: str, frames: int, patches: int) -> int:
    """Walk every query token and count the keys it is scored against."""
    total = 0
    for t in range(frames):
        for s in range(patches):
            if attention_type == "joint":
                total += frames * patches  # every token
            elif attention_type == "divided":
                total += frames + patches  # its position in every frame, then every patch of its frame
            else:
                total += patches  # its own frame
    return total


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("frames,patches", [(1, 1), (3, 5), (8, 196)])
def test_score_pairs_match_a_hand_count(attention_type, frames, patches):
    assert score_pairs(attention_type, frames, patches) == _hand_count(attention_type, frames, patches)


def test_score_flops_at_timesformer_base_size():
    # 8 frames of 14x14 patches, 12 heads of 64: (1568)^2 pairs against 196*64 + 8*196^2.
    assert score_flops("joint", 8, 196, 64, 12) == 4 * 64 * 12 * 1568**2
    assert score_flops("divided", 8, 196, 64, 12) == 4 * 64 * 12 * (196 * 8**2 + 8 * 196**2)
    assert score_flops("space_only", 8, 196, 64, 12) == 4 * 64 * 12 * 8 * 196**2
    assert projection_flops("divided", 8, 196, 768) == 2 * projection_flops("joint", 8, 196, 768)
    assert materialised_bytes(8, 196, 12) == 2 * 12 * 1568**2 * 4


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_flop_formulas_match_torch_flop_counter(attention_type):
    # The math backend runs attention as plain matrix products, which the counter sees.
    layer = SpaceTimeAttention(attention_type, 16, 2)
    x = torch.randn(2, 3, 5, 16)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        layer(x)
    expected = score_flops(attention_type, 3, 5, 8, 2) + projection_flops(attention_type, 3, 5, 16)
    assert counter.get_total_flops() == 2 * expected  # batch of two videos


# ------------------------------------------------------------------------------------------------
# Outputs against a dense reference written out by hand
# ------------------------------------------------------------------------------------------------


def _attend(layer, tokens: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d)) v per head over one (N, d_model) sequence, with the layer's weights."""
    q, k, v = layer.q_proj(tokens), layer.k_proj(tokens), layer.v_proj(tokens)
    heads = []
    for h in range(layer.n_heads):
        part = slice(h * layer.head_dim, (h + 1) * layer.head_dim)
        scores = q[:, part] @ k[:, part].T / math.sqrt(layer.head_dim)
        heads.append(torch.softmax(scores, dim=-1) @ v[:, part])
    return layer.out_proj(torch.cat(heads, dim=-1))


def _reference(module: SpaceTimeAttention, x: torch.Tensor) -> torch.Tensor:
    b, t, s, d = x.shape
    out = torch.empty_like(x)
    if module.attention_type == "joint":
        for i in range(b):
            out[i] = _attend(module.layers[0], x[i].reshape(t * s, d)).view(t, s, d)
        return out
    if module.attention_type == "divided":
        time_out = torch.empty_like(x)
        for i in range(b):
            for p in range(s):  # each patch position over the frames
                time_out[i, :, p] = _attend(module.layers[0], x[i, :, p])
        x, space = time_out, module.layers[1]
    else:
        space = module.layers[0]
    for i in range(b):
        for f in range(t):  # each frame over its patches
            out[i, f] = _attend(space, x[i, f])
    return out


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_each_type_matches_its_hand_written_reference(attention_type):
    torch.manual_seed(0)
    module = SpaceTimeAttention(attention_type, 12, 3).double()
    x = torch.randn(2, 3, 4, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(module(x), _reference(module, x))


def test_joint_path_that_holds_the_scores_gives_the_same_output():
    torch.manual_seed(0)
    module = SpaceTimeAttention("joint", 12, 3).double()
    x = torch.randn(1, 3, 4, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(module(x, output_attentions=True), module(x))


@pytest.mark.parametrize("backend", ["kernel", "auto"])
def test_a_window_covering_the_whole_joint_sequence_is_dense_attention(backend):
    torch.manual_seed(0)
    dense = SpaceTimeAttention("joint", 12, 3).double()
    options = {"window": 12, "backend": backend}
    window = SpaceTimeAttention("joint", 12, 3, attention={"name": "sliding_window", "options": options})
    window.load_state_dict(dense.state_dict())
    x = torch.randn(1, 3, 4, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(window.double()(x), dense(x))


# ------------------------------------------------------------------------------------------------
# Bad input and the measurement records
# ------------------------------------------------------------------------------------------------


def test_bad_input_raises_named_errors():
    with pytest.raises(ConfigError, match="joint, divided, space_only"):
        score_pairs("axial", 2, 2)
    with pytest.raises(ConfigError, match="frames must be a positive integer"):
        score_flops("joint", 0, 4, 8)
    with pytest.raises(ConfigError, match="joint, divided, space_only"):
        SpaceTimeAttention("full", 8, 2)
    with pytest.raises(ShapeError, match=r"\(batch, frames, patches, d_model\)"):
        SpaceTimeAttention("divided", 8, 2)(torch.randn(2, 3, 8))
    with pytest.raises(ConfigError, match="joint attention only"):
        SpaceTimeAttention("divided", 8, 2)(torch.randn(1, 2, 3, 8), output_attentions=True)
    with pytest.raises(ConfigError, match="divisible"):
        run_space_time([2], patches=4, d_model=10, n_heads=3, isolated=False)


def test_measure_layer_reports_time_and_memory():
    result = measure_layer("divided", 2, 4, 16, 2, repeats=2)
    assert result["runs"] == 2 and result["ms"] > 0 and result["peak_mb"] >= 0


def test_run_space_time_records_flops_and_skips_what_would_not_fit(tmp_path):
    cases = [Case("joint dense (scores held)", "joint", materialise=True), Case("space_only dense", "space_only"),
             Case("joint linear", "joint", "linear"), Case("divided capped", "divided", max_frames=2)]
    held_at_4 = materialised_bytes(4, 9, 2) / (1 << 20)
    records = run_space_time([2, 4], patches=9, d_model=16, n_heads=2, cases=cases, repeats=1,
                             max_held_mb=held_at_4 * 0.9, isolated=False)
    by = {(r["case"], r["frames"]): r for r in records}
    assert len(records) == 8
    assert "ms" in by[("divided capped", 2)] and "capped at 2 frames" in by[("divided capped", 4)]["skipped"]
    assert "ms" in by[("joint dense (scores held)", 2)]
    skipped = by[("joint dense (scores held)", 4)]
    assert "ms" not in skipped and "over the" in skipped["skipped"]
    assert by[("space_only dense", 4)]["score_flops"] == score_flops("space_only", 4, 9, 8, 2)
    assert by[("joint linear", 4)]["score_pairs"] is None and by[("joint linear", 4)]["score_flops"] > 0
    assert "over the" in format_table(records)
    assert set(growth(records)) == {"space_only dense", "joint linear"}  # skipped cases have one point
    assert plot_records(records, tmp_path / "cost.png").stat().st_size > 0


def test_one_case_runs_in_a_fresh_process():
    records = run_space_time([2], patches=4, d_model=8, n_heads=2, cases=[Case("divided dense", "divided")],
                             repeats=1, threads=1, timeout=120)
    assert records[0]["ms"] > 0 and "error" not in records[0]


def test_demo_section_writes_its_table_and_figure(tmp_path):
    from polyformer.demo import run_demo

    page = run_demo(tmp_path, quick=True, only=["space_time_section"]).read_text()
    assert "Video attention" in page and "divided dense" in page and "T^" in page
    assert (tmp_path / "space_time_attention.png").stat().st_size > 0
