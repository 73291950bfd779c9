"""Every registered attention mechanism runs inside the Encoder and the Decoder.

The parameter list is read from the registry when tests are collected, so mechanisms added later are
covered without editing this file.
"""

import pytest
import torch

from polyformer import attention
from polyformer.attention import patterns
from polyformer.errors import PolyformerError
from polyformer.transformer import Decoder, Encoder, TransformerConfig

MECHANISMS = attention.list()
LENGTHS = (128, 64)  # the first length a mechanism accepts with its default options is used
# Mechanisms that need an option without a default get an example value here.
REQUIRED_OPTIONS = {"sparse": {"pattern": patterns.Band(8, 8) | patterns.Global([0])}}


def _config(name: str, n_layers: int = 2) -> TransformerConfig:
    spec = attention.AttentionSpec(name, REQUIRED_OPTIONS.get(name, {}))
    return TransformerConfig(d_model=32, n_heads=4, n_layers=n_layers, attention=spec, rotary={"dim": 4})


def _first_length_that_runs(run):
    """Call ``run(length)`` for each length; a refusal must be a clear polyformer error."""
    refusals = []
    for length in LENGTHS:
        try:
            return length, run(length)
        except PolyformerError as error:  # anything else is a bug, not a refusal
            refusals.append(f"length {length}: {error}")
    pytest.fail("mechanism refused every test length:\n" + "\n".join(refusals))


@pytest.mark.parametrize("name", MECHANISMS)
def test_encoder_forward_and_backward_with_every_mechanism(name):
    encoder = Encoder(_config(name)).train()

    def run(length):
        x = torch.randn(2, length, 32, requires_grad=True)
        mask = torch.ones(2, length, dtype=torch.bool)
        mask[1, -16:] = False
        out = encoder(x, key_padding_mask=mask)
        out[mask].square().mean().backward()
        return x, out

    length, (x, out) = _first_length_that_runs(run)
    assert out.shape == (2, length, 32)
    assert torch.isfinite(out).all()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for param_name, p in encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), param_name
    assert encoder.layers[0].attn.q_proj.weight.grad.abs().sum() > 0  # gradient reaches attention


@pytest.mark.parametrize("name", MECHANISMS)
def test_decoder_with_caches_runs_with_every_mechanism(name):
    decoder = Decoder(_config(name)).double().eval()

    def run(length):
        x = torch.randn(2, length, 32, dtype=torch.float64)
        full = decoder(x)
        caches = decoder.new_caches()
        prompt = length - 4
        steps = [decoder(x[:, :prompt], caches=caches)]
        steps += [decoder(x[:, t : t + 1], caches=caches) for t in range(prompt, length)]
        return full, torch.cat(steps, dim=1), caches

    length, (full, decoded, caches) = _first_length_that_runs(run)
    assert decoded.shape == full.shape == (2, length, 32)
    assert torch.isfinite(full).all() and torch.isfinite(decoded).all()
    assert all(len(c.self_attention) == length for c in caches)
    # Position 0 can only see itself, whatever the mechanism approximates.
    torch.testing.assert_close(decoded[:, 0], full[:, 0])
    # Mechanisms that promise it must decode exactly what the full causal pass computes.
    if decoder.layers[0].attn.mechanism.consistent_decoding:
        torch.testing.assert_close(decoded, full)
