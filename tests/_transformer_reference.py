"""Hand-written reference of a transformer block, from a module's weights and plain tensor ops.

Shared by the transformer tests; nothing here calls a polyformer module's forward.
"""

import math

import torch
import torch.nn.functional as F

from polyformer.attention import reference_attention
from polyformer.layers import GatedMLP, RMSNorm

ACT = {
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "gelu_new": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "silu": lambda x: x * torch.sigmoid(x),
    "relu": torch.relu,
}


def linear(layer, x):
    out = x @ layer.weight.T
    return out if layer.bias is None else out + layer.bias


def norm(module, x):
    if isinstance(module, RMSNorm):
        return x / torch.sqrt((x**2).mean(-1, keepdim=True) + module.eps) * module.weight
    return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)


def attention(module, x, context=None, *, causal=False, key_padding_mask=None, angles=None):
    """out_proj(softmax(q kᵀ · scale) v) over heads, with optional rotary angles."""
    h = module.n_heads
    source = x if context is None else context

    def heads(t):
        return t.view(t.shape[0], t.shape[1], h, -1).transpose(1, 2)

    q = heads(linear(module.q_proj, x))
    k, v = heads(linear(module.k_proj, source)), heads(linear(module.v_proj, source))
    if angles is not None:
        q, k = angles.apply(q), angles.apply(k)
    out = reference_attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=module.scale)
    b, _, n, _ = out.shape
    return linear(module.out_proj, out.transpose(1, 2).reshape(b, n, -1))


def mlp(module, x, activation):
    act = ACT[activation]
    if isinstance(module, GatedMLP):
        return linear(module.down_proj, act(linear(module.gate_proj, x)) * linear(module.up_proj, x))
    return linear(module.fc_out, act(linear(module.fc_in, x)))


def block(blk, config, x, *, causal=False, key_padding_mask=None, angles=None, context=None, context_mask=None):
    """The block written out for each residual arrangement the config allows."""

    def self_attn(h):
        return attention(blk.attn, h, causal=causal, key_padding_mask=key_padding_mask, angles=angles)

    def cross_attn(h):
        return attention(blk.cross_attn, h, context, key_padding_mask=context_mask)

    def ffn(h):
        return mlp(blk.mlp, h, config.activation)

    if config.parallel_residual:
        h = norm(blk.attn_norm, x)
        return x + self_attn(h) + ffn(h)
    steps = [(blk.attn_norm, self_attn)]
    if config.cross_attention is not None:
        steps.insert(0 if config.cross_attention_first else 1, (blk.cross_norm, cross_attn))
    steps.append((blk.mlp_norm, ffn))
    for n, f in steps:
        x = x + f(norm(n, x)) if config.norm_position == "pre" else norm(n, x + f(x))
    return x
