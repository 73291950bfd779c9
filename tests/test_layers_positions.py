"""Learned, sinusoidal and rotary positions, and resizing position tables, against references."""

import math

import numpy as np
import pytest
import torch

from polyformer.errors import ConfigError, ShapeError
from polyformer.layers import (
    LearnedPositions,
    RotaryEmbedding,
    RotaryOptions,
    SinusoidalPositions,
    resize_positions_1d,
    resize_positions_2d,
    sinusoidal_table,
)


# -- learned and sinusoidal ---------------------------------------------------------------------
def test_learned_positions_gather_rows_and_reject_positions_beyond_the_table():
    pos = LearnedPositions(8, 3)
    ids = torch.tensor([[0, 1, 2], [5, 6, 7]])
    torch.testing.assert_close(pos(ids), pos.weight[ids])
    with pytest.raises(ShapeError, match="position 8 is beyond the 8 learned positions.*resize_positions_1d"):
        pos(torch.tensor([7, 8]))


def test_sinusoidal_matches_the_closed_form():
    d, base = 6, 10000.0
    positions = torch.tensor([0, 1, 5, 123])
    got = SinusoidalPositions(d)(positions, dtype=torch.float64)
    for r, p in enumerate(positions.tolist()):
        for i in range(d // 2):
            angle = p / base ** (2 * i / d)
            assert got[r, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-12)
            assert got[r, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-12)
    assert sinusoidal_table(torch.zeros(2, 3, dtype=torch.long), 4).shape == (2, 3, 4)


def test_sinusoidal_rejects_odd_width():
    with pytest.raises(ConfigError, match="even"):
        SinusoidalPositions(5)


# -- rotary --------------------------------------------------------------------------------------
def _naive_rotary(x, positions, rotary_dim, base, interleaved):
    """Each channel pair as a complex number, multiplied by exp(i * position * base^(-2i/rotary_dim))."""
    out = x.clone()
    half = rotary_dim // 2
    for b in range(x.shape[0]):
        for n in range(x.shape[2]):
            p = int(positions[b, n])
            for i in range(half):
                a, c = (2 * i, 2 * i + 1) if interleaved else (i, i + half)
                z = complex(x[b, 0, n, a], x[b, 0, n, c]) * complex(
                    math.cos(p * base ** (-2 * i / rotary_dim)), math.sin(p * base ** (-2 * i / rotary_dim))
                )
                out[b, 0, n, a], out[b, 0, n, c] = z.real, z.imag
    return out


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("rotary_dim", [4, 8])
def test_rotary_matches_complex_multiplication(interleaved, rotary_dim):
    x = torch.randn(2, 1, 5, 8, dtype=torch.float64)
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 3, 0, 11, 2]])
    rope = RotaryEmbedding(8, RotaryOptions(dim=rotary_dim, base=100.0, interleaved=interleaved))
    got = rope(positions, torch.float64).apply(x)
    torch.testing.assert_close(got, _naive_rotary(x, positions, rotary_dim, 100.0, interleaved))
    if rotary_dim < 8:  # channels past rotary_dim pass through
        torch.testing.assert_close(got[..., rotary_dim:], x[..., rotary_dim:])


@pytest.mark.parametrize("interleaved", [True, False])
def test_rotary_scores_depend_only_on_relative_position(interleaved):
    rope = RotaryEmbedding(8, RotaryOptions(interleaved=interleaved))
    q, k = torch.randn(2, 1, 1, 1, 8, dtype=torch.float64)

    def score(pq, pk):
        rq = rope(torch.tensor([pq]), torch.float64).apply(q)
        rk = rope(torch.tensor([pk]), torch.float64).apply(k)
        return (rq * rk).sum()

    torch.testing.assert_close(score(3, 1), score(10, 8))
    torch.testing.assert_close(score(0, 5), score(20, 25))


def test_rotary_matches_hugging_face_gptj_and_llama():
    from transformers.models.gptj import modeling_gptj as gptj
    from transformers.models.llama import modeling_llama as llama

    b, n, h, d, rd = 2, 6, 3, 8, 4
    x = torch.randn(b, n, h, d)
    position_ids = torch.tensor([[0, 1, 2, 3, 4, 5], [3, 4, 5, 6, 7, 8]])
    # GPT-J: interleaved, on the first rotary_dim channels, tensors laid out (B, N, H, D).
    table = gptj.create_sinusoidal_positions(16, rd)[position_ids]  # (B, N, rd)
    sin, cos = table.split(rd // 2, dim=-1)
    expected = torch.cat([gptj.apply_rotary_pos_emb(x[..., :rd], sin, cos), x[..., rd:]], dim=-1)
    ours = RotaryEmbedding(d, RotaryOptions(dim=rd, interleaved=True))(position_ids, torch.float32)
    torch.testing.assert_close(ours.apply(x.transpose(1, 2)).transpose(1, 2), expected)
    # LLaMA: "rotate half" over the whole head, tensors laid out (B, H, N, D).
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    freqs = position_ids[..., None].float() * inv_freq  # (B, N, d/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    q = x.transpose(1, 2)
    expected_q, _ = llama.apply_rotary_pos_emb(q, q, emb.cos(), emb.sin())
    ours = RotaryEmbedding(d, RotaryOptions(interleaved=False))(position_ids, torch.float32)
    torch.testing.assert_close(ours.apply(q), expected_q)


@pytest.mark.parametrize(
    "options,match",
    [({"dim": 3}, "positive even"), ({"base": 0.5}, "base"), ({"interleaved": "yes"}, "interleaved")],
)
def test_rotary_options_are_checked(options, match):
    with pytest.raises(ConfigError, match=match):
        RotaryOptions(**options)


# -- resizing position tables ---------------------------------------------------------------------
def _linear_resample(table: np.ndarray, new_length: int) -> np.ndarray:
    """Half-pixel-centre linear interpolation, written out with np.interp (ends are clamped)."""
    old = table.shape[0]
    src = (np.arange(new_length) + 0.5) * old / new_length - 0.5
    return np.stack([np.interp(src, np.arange(old), table[:, c]) for c in range(table.shape[1])], axis=1)


@pytest.mark.parametrize("new_length", [5, 8, 13, 31])
def test_resize_1d_matches_linear_interpolation_and_keeps_prefix(new_length):
    table = torch.randn(1 + 8, 3, dtype=torch.float64)
    got = resize_positions_1d(table, new_length, num_prefix_tokens=1)
    assert got.shape == (1 + new_length, 3)
    torch.testing.assert_close(got[0], table[0])
    expected = _linear_resample(table[1:].numpy(), new_length)
    np.testing.assert_allclose(got[1:].numpy(), expected, atol=1e-12)


def test_resize_to_the_same_size_is_the_identity():
    table = torch.randn(1, 1 + 16, 4)
    torch.testing.assert_close(resize_positions_1d(table, 16, num_prefix_tokens=1), table)
    torch.testing.assert_close(resize_positions_2d(table, (4, 4), num_prefix_tokens=1), table)


@pytest.mark.parametrize("new_size", [(12, 12), (6, 10), (16, 8)])
def test_resize_2d_matches_hugging_face_vit_interpolation(new_size):
    from transformers import ViTConfig
    from transformers.models.vit.modeling_vit import ViTEmbeddings

    config = ViTConfig(image_size=8, patch_size=2, hidden_size=6, num_channels=1)
    embeddings = ViTEmbeddings(config)
    with torch.no_grad():
        embeddings.position_embeddings.normal_()
    new_grid = (new_size[0] // 2, new_size[1] // 2)
    dummy = torch.zeros(1, 1 + new_grid[0] * new_grid[1], 6)
    expected = embeddings.interpolate_pos_encoding(dummy, *new_size)
    got = resize_positions_2d(embeddings.position_embeddings.detach(), new_grid, num_prefix_tokens=1)
    torch.testing.assert_close(got, expected.detach())


def test_resize_2d_non_square_source_and_errors():
    table = torch.randn(6 * 4, 2, dtype=torch.float64)
    up = resize_positions_2d(table, (12, 8), old_grid=(6, 4), mode="bilinear")
    # Bilinear doubling with half-pixel centres: an interior output is 3/4 - 1/4 of its neighbours.
    grid = table.reshape(6, 4, 2)
    row0 = 0.75 * grid[0, 0] + 0.25 * grid[0, 1]
    row1 = 0.75 * grid[1, 0] + 0.25 * grid[1, 1]
    torch.testing.assert_close(up.reshape(12, 8, 2)[1, 1], 0.75 * row0 + 0.25 * row1)
    with pytest.raises(ShapeError, match="not a square; pass old_grid"):
        resize_positions_2d(table, (4, 4))
    with pytest.raises(ShapeError, match="does not hold"):
        resize_positions_2d(table, (4, 4), old_grid=(5, 5))
    with pytest.raises(ShapeError, match=r"\(N, d\) or \(1, N, d\)"):
        resize_positions_1d(torch.randn(2, 3, 4), 5)
    with pytest.raises(ConfigError, match="bicubic"):
        resize_positions_2d(table, (4, 4), old_grid=(6, 4), mode="area")
