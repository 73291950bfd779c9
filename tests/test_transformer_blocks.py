"""Block, Encoder and Decoder against the hand-written reference in _transformer_reference.py."""

import pytest
import torch

from _transformer_reference import block as reference_block
from _transformer_reference import norm as reference_norm
from polyformer.errors import ShapeError
from polyformer.transformer import Block, Decoder, Encoder, TransformerConfig

D, H = 16, 4
VARIANTS = {
    "pre_ln_gpt2": dict(activation="gelu_new"),
    "post_ln_bert": dict(norm_position="post", norm_eps=1e-12, activation="gelu"),
    "parallel_gptj": dict(parallel_residual=True, qkv_bias=False, out_bias=False, rotary={"dim": 2, "interleaved": True}),
    "rms_swiglu_llama": dict(
        norm="rmsnorm", mlp="gated", activation="silu", qkv_bias=False, out_bias=False, mlp_bias=False, rotary={}
    ),
    "unscaled_gptneo": dict(attention_scale=1.0, qkv_bias=False, activation="gelu_new"),
    "pre_ln_cross": dict(cross_attention=True, activation="quick_gelu", cross_attention_dim=6),
    "post_ln_cross_first_lxmert": dict(
        cross_attention=True, cross_attention_first=True, norm_position="post", activation="relu"
    ),
    "wide_heads_with_dropout_in_eval": dict(head_dim=8, d_ff=24, dropout=0.3),
}


def _config(**fields):
    return TransformerConfig(d_model=D, n_heads=H, n_layers=2, **fields)


def _randomise(module):
    """Random norms and biases too, so that a swapped or missing parameter shows."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module.double().eval()


def _inputs(config, n=6):
    x = torch.randn(2, n, D, dtype=torch.float64)
    kpm = torch.ones(2, n, dtype=torch.bool)
    kpm[1, -2:] = False
    context = context_mask = None
    if config.cross_attention is not None:
        context = torch.randn(2, 5, config.cross_attention_dim or D, dtype=torch.float64)
        context_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    return x, kpm, context, context_mask


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_block_matches_reference(variant, causal):
    config = _config(**VARIANTS[variant])
    blk = _randomise(Block(config))
    x, kpm, context, context_mask = _inputs(config)
    angles = None
    if config.rotary is not None:
        from polyformer.layers import RotaryEmbedding

        angles = RotaryEmbedding(config.attention_head_dim, config.rotary)(torch.arange(6), torch.float64)
    got = blk(
        x, causal=causal, key_padding_mask=kpm, rotary=angles, encoder_states=context,
        encoder_padding_mask=context_mask,
    )
    expected = reference_block(
        blk, config, x, causal=causal, key_padding_mask=kpm, angles=angles, context=context, context_mask=context_mask
    )
    torch.testing.assert_close(got, expected)


def test_parallel_block_has_one_norm_and_post_ln_stack_no_final_norm():
    parallel = Block(_config(parallel_residual=True))
    assert parallel.mlp_norm is None
    assert "mlp_norm.weight" not in parallel.state_dict()
    assert not any(k.startswith("final_norm") for k in Encoder(_config(norm_position="post")).state_dict())


@pytest.mark.parametrize("stack_cls,causal", [(Encoder, False), (Decoder, True)])
@pytest.mark.parametrize("variant", ["pre_ln_gpt2", "post_ln_bert", "parallel_gptj", "pre_ln_cross"])
def test_stacks_compose_blocks_and_final_norm(stack_cls, causal, variant):
    config = _config(**VARIANTS[variant])
    stack = _randomise(stack_cls(config))
    x, kpm, context, context_mask = _inputs(config)
    angles = stack.rotary(torch.arange(6), torch.float64) if stack.rotary is not None else None
    expected = x
    for blk in stack.layers:
        expected = reference_block(
            blk, config, expected, causal=causal, key_padding_mask=kpm, angles=angles, context=context,
            context_mask=context_mask,
        )
    if config.uses_final_norm:
        expected = reference_norm(stack.final_norm, expected)
    got = stack(x, key_padding_mask=kpm, encoder_states=context, encoder_padding_mask=context_mask)
    torch.testing.assert_close(got, expected)


def test_dropout_is_active_in_training_only():
    stack = Encoder(_config(dropout=0.5))
    x = torch.randn(2, 6, D)
    stack.eval()
    torch.testing.assert_close(stack(x), stack(x))
    stack.train()
    assert not torch.allclose(stack(x), stack(x))


def test_stack_input_errors_name_the_shape():
    enc = Encoder(_config())
    with pytest.raises(ShapeError, match=r"input must be \(batch, length, d_model=16\)"):
        enc(torch.randn(2, 6, 8))
    with pytest.raises(ShapeError, match=r"key_padding_mask must be \(batch, keys\) = \(2, 6\)"):
        enc(torch.randn(2, 6, D), key_padding_mask=torch.ones(2, 5))
    cross = Encoder(_config(cross_attention=True))
    with pytest.raises(ShapeError, match="pass encoder_states"):
        cross(torch.randn(2, 6, D))
    with pytest.raises(ShapeError, match="encoder_states must be"):
        cross(torch.randn(2, 6, D), encoder_states=torch.randn(3, 4, D))
