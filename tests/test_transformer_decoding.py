"""Decoder caches: decoding token by token or in chunks equals one full causal forward."""

import pytest
import torch

from polyformer.errors import ShapeError
from polyformer.layers import LearnedPositions
from polyformer.transformer import Decoder, TransformerConfig, cache_length, default_position_ids

D = 16


def _decoder(**fields):
    config = TransformerConfig(d_model=D, n_heads=4, n_layers=3, **fields)
    return Decoder(config).double().eval()


def _decode(decoder, x, chunks):
    """Feed ``x`` in pieces of the given lengths through one set of caches; concatenate outputs."""
    caches = decoder.new_caches()
    outs, start = [], 0
    for size in chunks:
        outs.append(decoder(x[:, start : start + size], caches=caches))
        start += size
    assert cache_length(caches) == x.shape[1]
    return torch.cat(outs, dim=1)


ROTARY = {
    "none": None,
    "interleaved_partial": {"dim": 2, "interleaved": True},
    "half_split_full": {"interleaved": False},
}


@pytest.mark.parametrize("chunks", [[1] * 9, [4, 1, 3, 1], [9]])
@pytest.mark.parametrize("rotary", sorted(ROTARY))
def test_cached_decoding_equals_full_forward(rotary, chunks):
    decoder = _decoder(rotary=ROTARY[rotary])
    x = torch.randn(2, 9, D, dtype=torch.float64)
    full = decoder(x)
    torch.testing.assert_close(_decode(decoder, x, chunks), full)


def test_decoder_is_causal():
    decoder = _decoder(rotary={})
    x = torch.randn(1, 8, D, dtype=torch.float64)
    changed = x.clone()
    changed[:, 5:] = torch.randn(1, 3, D, dtype=torch.float64)
    torch.testing.assert_close(decoder(x)[:, :5], decoder(changed)[:, :5])
    assert not torch.allclose(decoder(x)[:, 5:], decoder(changed)[:, 5:])


def test_left_padded_batch_with_position_ids_matches_each_sequence_alone():
    decoder = _decoder(rotary={"dim": 2, "interleaved": True})
    pad = 3
    seq = torch.randn(1, 7, D, dtype=torch.float64)
    other = torch.randn(1, 10, D, dtype=torch.float64)
    x = torch.cat([torch.cat([torch.zeros(1, pad, D, dtype=torch.float64), seq], dim=1), other])  # (2, 10, D)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, :pad] = False
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)  # the Hugging Face recipe
    alone = decoder(seq)
    full = decoder(x, key_padding_mask=mask, position_ids=position_ids)
    torch.testing.assert_close(full[0, pad:], alone[0])
    torch.testing.assert_close(full[1], decoder(other)[0])

    # Same batch, decoded as a prompt of 6 then token by token: the mask grows with the cache.
    caches = decoder.new_caches()
    outs = [decoder(x[:, :6], key_padding_mask=mask[:, :6], position_ids=position_ids[:, :6], caches=caches)]
    for t in range(6, 10):
        outs.append(
            decoder(
                x[:, t : t + 1], key_padding_mask=mask[:, : t + 1], position_ids=position_ids[:, t : t + 1],
                caches=caches,
            )
        )
    decoded = torch.cat(outs, dim=1)
    torch.testing.assert_close(decoded[0, pad:], alone[0])
    torch.testing.assert_close(decoded[1], full[1])


def test_cross_attention_decoding_computes_encoder_keys_once():
    decoder = _decoder(cross_attention=True, rotary={}, cross_attention_dim=6)
    x = torch.randn(2, 7, D, dtype=torch.float64)
    memory = torch.randn(2, 5, 6, dtype=torch.float64)
    memory_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    full = decoder(x, encoder_states=memory, encoder_padding_mask=memory_mask)
    caches = decoder.new_caches()
    outs = [decoder(x[:, :3], caches=caches, encoder_states=memory, encoder_padding_mask=memory_mask)]
    k_first = caches[0].cross_attention.k
    for t in range(3, 7):  # later steps need not pass the encoder states again
        outs.append(decoder(x[:, t : t + 1], caches=caches))
    assert caches[0].cross_attention.k is k_first
    torch.testing.assert_close(torch.cat(outs, dim=1), full)


def test_learned_positions_continue_from_the_cache():
    """A GPT-2-style front-end: positions come from default_position_ids(past=cache_length)."""
    decoder, wpe = _decoder(), LearnedPositions(16, D).double()
    tokens = torch.randn(1, 8, D, dtype=torch.float64)
    full = decoder(tokens + wpe(default_position_ids(1, 8)))
    caches, outs = decoder.new_caches(), []
    for start, size in [(0, 5), (5, 1), (6, 2)]:
        pos = default_position_ids(1, size, past=cache_length(caches))
        outs.append(decoder(tokens[:, start : start + size] + wpe(pos), caches=caches))
    torch.testing.assert_close(torch.cat(outs, dim=1), full)


def test_decoding_errors_say_how_to_fix_them():
    decoder = _decoder()
    caches = decoder.new_caches()
    decoder(torch.randn(1, 3, D, dtype=torch.float64), caches=caches)
    expected = r"key_padding_mask must be \(batch, keys\) = \(1, 4\) \(with caches: 3 cached \+ 1 new\)"
    with pytest.raises(ShapeError, match=expected):
        decoder(torch.randn(1, 1, D, dtype=torch.float64), key_padding_mask=torch.ones(1, 1), caches=caches)
    with pytest.raises(ShapeError, match="use decoder.new_caches"):
        decoder(torch.randn(1, 1, D, dtype=torch.float64), caches=caches[:1])
    with pytest.raises(ShapeError, match="position_ids must be"):
        _decoder(rotary={})(torch.randn(1, 3, D, dtype=torch.float64), position_ids=torch.arange(4))
