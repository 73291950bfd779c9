"""Norms, activations, MLPs and the token embedding against their closed forms and Hugging Face."""

import math

import pytest
import torch
import torch.nn.functional as F

from polyformer.errors import ConfigError, ShapeError
from polyformer.layers import (
    ACTIVATIONS,
    MLP,
    GatedMLP,
    LayerNorm,
    RMSNorm,
    TokenEmbedding,
    build_activation,
    build_mlp,
    build_norm,
)

CLOSED_FORMS = {
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "gelu_new": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "gelu_pytorch_tanh": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "gelu_fast": lambda x: 0.5 * x * (1 + torch.tanh(0.7978845608 * x * (1 + 0.044715 * x * x))),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": lambda x: torch.clamp(x, min=0),
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "swish": lambda x: x / (1 + torch.exp(-x)),
    "tanh": torch.tanh,
}


def test_every_activation_has_a_closed_form_test():
    assert set(ACTIVATIONS) == set(CLOSED_FORMS)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_activation_matches_closed_form_and_hugging_face(name):
    from transformers.activations import ACT2FN

    x = torch.linspace(-6, 6, 241, dtype=torch.float64)
    got = build_activation(name)(x)
    torch.testing.assert_close(got, CLOSED_FORMS[name](x), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(got, ACT2FN[name](x), atol=1e-9, rtol=1e-9)


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown activation 'gelu2'.*quick_gelu"):
        build_activation("gelu2")


def test_layernorm_matches_formula():
    norm = build_norm("layernorm", 6, 1e-12).double()
    assert isinstance(norm, LayerNorm)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-12) * norm.weight + norm.bias
    torch.testing.assert_close(norm(x), expected)


def test_rmsnorm_matches_formula_and_hugging_face_imagegpt_and_llama():
    from transformers.models.imagegpt.modeling_imagegpt import ImageGPTLayerNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = build_norm("rmsnorm", 8, 1e-5)
    assert isinstance(norm, RMSNorm)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(2, 5, 8)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    igpt, llama = ImageGPTLayerNorm(8, eps=1e-5), LlamaRMSNorm(8, eps=1e-5)
    with torch.no_grad():
        igpt.weight.copy_(norm.weight)
        llama.weight.copy_(norm.weight)
    torch.testing.assert_close(norm(x), igpt(x))
    torch.testing.assert_close(norm(x), llama(x))


def test_rmsnorm_in_bfloat16_normalises_in_float32():
    norm = RMSNorm(16)
    x = (torch.randn(4, 16) * 300).bfloat16()  # a bf16 sum of squares this large loses digits
    got = RMSNorm(16).bfloat16()(x)
    assert got.dtype == torch.bfloat16
    # Only the final cast to bf16 rounds: within one bf16 ulp of the float32 result.
    torch.testing.assert_close(got.float(), norm(x.float()), atol=0, rtol=2**-8)


def test_unknown_norm_lists_valid_names():
    with pytest.raises(ConfigError, match="layernorm, rmsnorm"):
        build_norm("batchnorm", 4, 1e-5)


def test_mlp_matches_formula():
    mlp = build_mlp("mlp", 6, 10, "gelu_new", bias=True).double()
    assert isinstance(mlp, MLP)
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    hidden = CLOSED_FORMS["gelu_new"](x @ mlp.fc_in.weight.T + mlp.fc_in.bias)
    torch.testing.assert_close(mlp(x), hidden @ mlp.fc_out.weight.T + mlp.fc_out.bias)


def test_gated_mlp_is_swiglu():
    mlp = build_mlp("gated", 6, 10, "silu", bias=False).double()
    assert isinstance(mlp, GatedMLP)
    assert mlp.gate_proj.bias is None
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    gate = x @ mlp.gate_proj.weight.T
    expected = (F.silu(gate) * (x @ mlp.up_proj.weight.T)) @ mlp.down_proj.weight.T
    torch.testing.assert_close(mlp(x), expected)


def test_unknown_mlp_kind():
    with pytest.raises(ConfigError, match="mlp, gated"):
        build_mlp("moe", 4, 8, "gelu", True)


def test_token_embedding_lookup_tied_logits_and_errors():
    emb = TokenEmbedding(11, 4)
    ids = torch.tensor([[0, 3, 10]])
    torch.testing.assert_close(emb(ids), emb.weight[ids])
    h = torch.randn(2, 4)
    torch.testing.assert_close(emb.logits(h), torch.stack([emb.weight @ row for row in h]))
    with pytest.raises(ShapeError, match=r"ids must lie in \[0, 11\).*vocab_size"):
        emb(torch.tensor([[1, 11]]))
    with pytest.raises(ShapeError, match="integer"):
        emb(torch.zeros(1, 2))
