"""Stochastic depth (drop-path) and LayerDrop: off in eval, the right rate in training, exact when seeded."""

import pytest
import torch
from torch import nn

from polyformer.errors import ConfigError
from polyformer.layers import DropPath, drop_path
from polyformer.transformer import Block, Encoder, TransformerConfig

from _transformer_reference import mlp, norm
from _transformer_reference import attention as reference_attention_layer

D, HEADS = 16, 2


def test_eval_output_is_unchanged_by_both():
    plain = Encoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=4)).eval()
    dropping = Encoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=4, drop_path=0.5, layer_drop=0.5))
    dropping.load_state_dict(plain.state_dict())
    dropping.eval()
    x = torch.randn(3, 5, D)
    torch.testing.assert_close(dropping(x), plain(x))
    dropping.train()
    assert not torch.allclose(dropping(x), plain(x))


def test_drop_path_rate_rises_linearly_over_the_layers_as_timm():
    encoder = Encoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=5, drop_path=0.2))
    rates = [layer.drop_path.p for layer in encoder.layers]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.2, 5).double(), check_dtype=False)
    assert Encoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=1, drop_path=0.2)).layers[0].drop_path.p == 0.0


def test_drop_path_drops_whole_samples_at_rate_p_and_keeps_the_mean():
    torch.manual_seed(0)
    p, samples = 0.3, 20000
    x = torch.ones(samples, 4, 3)
    out = drop_path(x, p, training=True)
    dropped = (out == 0).all(dim=(1, 2))
    kept = (out == 1 / (1 - p)).all(dim=(1, 2))
    assert bool((dropped | kept).all())  # every sample is dropped or kept whole, rescaled
    assert abs(dropped.float().mean().item() - p) < 0.015  # 3 standard deviations is ~0.01
    assert abs(out.mean().item() - 1.0) < 0.03
    assert drop_path(x, p, training=False) is x
    module = DropPath(p).eval()
    assert module(x) is x


def test_drop_path_block_equals_the_seeded_composition():
    config = TransformerConfig(d_model=D, n_heads=HEADS, n_layers=2, drop_path=0.6)
    block = Block(config, layer_index=1).train()  # rate 0.6 on the last layer
    x = torch.randn(8, 5, D)
    torch.manual_seed(123)
    got = block(x)
    torch.manual_seed(123)
    keep = 1 - 0.6
    masks = [(torch.rand(8, 1, 1) < keep).float() / keep for _ in range(2)]  # attention, then MLP
    h = x + masks[0] * reference_attention_layer(block.attn, norm(block.attn_norm, x))
    want = h + masks[1] * mlp(block.mlp, norm(block.mlp_norm, h), config.activation)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert 0 < int((masks[0] == 0).sum()) < 8  # this seed drops some samples and keeps others


class _Counter(nn.Module):
    """A layer that adds its index + 1 and counts its calls."""

    def __init__(self, config, layer_index):
        super().__init__()
        self.value = float(layer_index + 1)
        self.calls = 0

    def forward(self, x, **kwargs):
        self.calls += 1
        return x + self.value


def test_layer_drop_skips_layers_at_rate_p():
    p, runs, layers = 0.25, 2000, 4
    encoder = Encoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=layers, layer_drop=p,
                                        final_norm=False), block_fn=_Counter).train()
    torch.manual_seed(0)
    x = torch.zeros(1, 1, D)
    for _ in range(runs):
        encoder(x)
    skipped = 1 - sum(layer.calls for layer in encoder.layers) / (runs * layers)
    assert abs(skipped - p) < 0.025  # 3 standard deviations is ~0.02
    encoder.eval()
    assert float(encoder(x)[0, 0, 0]) == 10.0  # every layer in eval


def test_layer_drop_equals_the_seeded_choice_and_reports_skipped_layers():
    encoder = Encoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=6, layer_drop=0.5,
                                        final_norm=False), block_fn=_Counter).train()
    x = torch.zeros(1, 1, D)
    torch.manual_seed(7)
    out = encoder.run(x, output_hidden_states=True)
    torch.manual_seed(7)
    kept = [float(torch.rand(())) >= 0.5 for _ in range(6)]
    assert 0 < sum(kept) < 6
    assert float(out.last_hidden_state[0, 0, 0]) == sum(i + 1 for i in range(6) if kept[i])
    steps = [float(h[0, 0, 0]) for h in out.hidden_states]
    assert [b - a for a, b in zip(steps, steps[1:])] == [float(i + 1) if kept[i] else 0.0 for i in range(6)]


def test_layer_drop_is_off_while_decoding_with_caches():
    from polyformer.transformer import Decoder

    decoder = Decoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=3, layer_drop=0.9)).train()
    x = torch.randn(1, 4, D)
    full = decoder(x, caches=decoder.new_caches())
    decoder.eval()
    torch.testing.assert_close(full, decoder(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("field", ["drop_path", "layer_drop"])
@pytest.mark.parametrize("value", [-0.1, 1.0, True])
def test_bad_rates_are_named(field, value):
    with pytest.raises(ConfigError, match=f"{field} must be in \\[0, 1\\)"):
        TransformerConfig(d_model=D, n_heads=HEADS, n_layers=2, **{field: value})
