"""``Encoder.run`` / ``Decoder.run``: hidden states and attention probabilities as Hugging Face returns them.

Tiny random ViT and BERT models are built at test time; their weights are copied into an Encoder
and ``output_hidden_states`` / ``output_attentions`` compared tensor by tensor.
"""

import pytest
import torch

from polyformer.attention import reference_attention
from polyformer.attention.reference import attention_probabilities
from polyformer.errors import ConfigError, ShapeError
from polyformer.models.vit_convert import vit_model_key_map
from polyformer.transformer import Decoder, Encoder, TransformerConfig
from _random_weights import randomise

transformers = pytest.importorskip("transformers")

D, HEADS, LAYERS, FF = 32, 4, 2, 64
ATOL = 1e-5


_randomise = randomise


def _eager(config):
    config._attn_implementation = "eager"  # the implementation that returns probabilities
    return config


def _assert_run_matches(ours, hf):
    torch.testing.assert_close(ours.last_hidden_state, hf.last_hidden_state, atol=ATOL, rtol=ATOL)
    assert len(ours.hidden_states) == len(hf.hidden_states) == LAYERS + 1
    for got, want in zip(ours.hidden_states, hf.hidden_states):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL)
    assert len(ours.attentions) == len(hf.attentions) == LAYERS
    for got, want in zip(ours.attentions, hf.attentions):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL)


def test_vit_hidden_states_and_attentions_match_transformers():
    hf_config = _eager(transformers.ViTConfig(
        hidden_size=D, num_attention_heads=HEADS, num_hidden_layers=LAYERS, intermediate_size=FF,
        image_size=8, patch_size=4, num_channels=3,
    ))
    hf = _randomise(transformers.ViTModel(hf_config, add_pooling_layer=False))
    state, unexpected = vit_model_key_map(pooler=False).to_ours(hf.state_dict())
    assert not unexpected
    encoder = Encoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=LAYERS, d_ff=FF, norm_eps=1e-12))
    encoder.load_state_dict({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")})
    encoder.eval()
    pixels = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = hf(pixels, output_hidden_states=True, output_attentions=True)
        got = encoder.run(want.hidden_states[0], output_hidden_states=True, output_attentions=True)
    # The final norm applies to last_hidden_state only, not to the last entry of hidden_states.
    assert not torch.allclose(got.hidden_states[-1], got.last_hidden_state)
    _assert_run_matches(got, want)


def _bert_encoder(hf):
    sd = hf.state_dict()
    pairs = [
        ("attn.q_proj", "attention.self.query"), ("attn.k_proj", "attention.self.key"),
        ("attn.v_proj", "attention.self.value"), ("attn.out_proj", "attention.output.dense"),
        ("attn_norm", "attention.output.LayerNorm"), ("mlp.fc_in", "intermediate.dense"),
        ("mlp.fc_out", "output.dense"), ("mlp_norm", "output.LayerNorm"),
    ]
    state = {
        f"layers.{i}.{ours}.{s}": sd[f"encoder.layer.{i}.{theirs}.{s}"]
        for i in range(LAYERS) for ours, theirs in pairs for s in ("weight", "bias")
    }
    encoder = Encoder(TransformerConfig(
        d_model=D, n_heads=HEADS, n_layers=LAYERS, d_ff=FF, norm_eps=1e-12, norm_position="post",
    ))
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


def test_bert_hidden_states_and_attentions_match_transformers_with_padding():
    hf_config = _eager(transformers.BertConfig(
        hidden_size=D, num_attention_heads=HEADS, num_hidden_layers=LAYERS, intermediate_size=FF,
        vocab_size=50, max_position_embeddings=16,
    ))
    hf = _randomise(transformers.BertModel(hf_config, add_pooling_layer=False))
    encoder = _bert_encoder(hf)
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        want = hf(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        got = encoder.run(want.hidden_states[0], key_padding_mask=mask, output_hidden_states=True,
                          output_attentions=True)
    _assert_run_matches(got, want)
    assert torch.all(got.attentions[0][1, :, :, 5:] == 0)  # padded keys get no probability


def test_forward_equals_run_and_nothing_extra_is_kept_unless_asked():
    encoder = Encoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=LAYERS)).eval()
    x = torch.randn(2, 5, D)
    out = encoder.run(x)
    assert out.hidden_states is None and out.attentions is None and out.cross_attentions is None
    torch.testing.assert_close(out.last_hidden_state, encoder(x))
    # With probabilities requested, the output is computed from them and agrees with the fused path.
    torch.testing.assert_close(encoder.run(x, output_attentions=True).last_hidden_state, encoder(x),
                               atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("name", ["lsh", "linear", "performer"])
def test_mechanisms_without_probabilities_name_the_ones_with(name):
    options = {"bucket_size": 4} if name == "lsh" else {}
    encoder = Encoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=1,
                                        attention={"name": name, "options": options}))
    encoder(torch.randn(1, 8, D))  # the plain forward still works
    with pytest.raises(ConfigError, match="output_attentions needs another mechanism.*dense.*memory_efficient"):
        encoder.run(torch.randn(1, 8, D), output_attentions=True)


def test_pattern_mechanism_probabilities_follow_its_dense_mask():
    config = TransformerConfig(d_model=D, n_heads=HEADS, n_layers=1,
                               attention={"name": "sliding_window", "options": {"window": 2}})
    encoder = Encoder(config).eval()
    x = torch.randn(1, 9, D)
    out = encoder.run(x, output_attentions=True)
    probs = out.attentions[0]
    far = (torch.arange(9)[:, None] - torch.arange(9)[None, :]).abs() > 2
    assert torch.all(probs[..., far] == 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, HEADS, 9))
    torch.testing.assert_close(out.last_hidden_state, encoder(x), atol=ATOL, rtol=ATOL)


def test_mechanism_probabilities_equal_the_reference_softmax_with_bias_and_causality():
    from polyformer import attention

    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    bias = torch.randn(1, 3, 5, 7)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, -3:] = False
    for name in ("dense", "memory_efficient"):
        mech = attention.build(name)
        probs = mech.attention_probabilities(q, k, True, mask, bias=bias)
        scores = (q @ k.transpose(-1, -2)) / 8**0.5 + bias
        allowed = (torch.arange(7)[None, :] <= torch.arange(5)[:, None] + 2) & mask[:, None, None, :]
        want = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        torch.testing.assert_close(probs, want)
        torch.testing.assert_close(probs @ v, reference_attention(q, k, v, causal=True, key_padding_mask=mask, bias=bias))


def test_decoder_attentions_while_decoding_equal_the_full_pass():
    decoder = Decoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=LAYERS)).eval()
    x = torch.randn(1, 6, D)
    full = decoder.run(x, output_attentions=True, output_hidden_states=True)
    caches = decoder.new_caches()
    first = decoder.run(x[:, :4], caches=caches, output_attentions=True)
    step = decoder.run(x[:, 4:], caches=caches, output_attentions=True)
    for layer in range(LAYERS):
        torch.testing.assert_close(first.attentions[layer], full.attentions[layer][:, :, :4, :4], atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(step.attentions[layer], full.attentions[layer][:, :, 4:], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(step.last_hidden_state, full.last_hidden_state[:, 4:], atol=ATOL, rtol=ATOL)


def test_cross_attention_with_padded_context_and_its_probabilities():
    config = TransformerConfig(d_model=D, n_heads=HEADS, n_layers=LAYERS, cross_attention=True,
                               cross_attention_dim=24)
    encoder = Encoder(config).eval()
    x, context = torch.randn(2, 5, D), torch.randn(2, 6, 24)
    context_mask = torch.ones(2, 6, dtype=torch.bool)
    context_mask[1, 3:] = False
    out = encoder.run(x, encoder_states=context, encoder_padding_mask=context_mask, output_attentions=True)
    assert len(out.cross_attentions) == LAYERS
    for layer, probs in zip(encoder.layers, out.cross_attentions):
        assert probs.shape == (2, HEADS, 5, 6)
        assert torch.all(probs[1, ..., 3:] == 0)
    # The padded context positions change nothing: replacing them gives the same output.
    noisy = context.clone()
    noisy[1, 3:] = torch.randn(3, 24)
    again = encoder(x, encoder_states=noisy, encoder_padding_mask=context_mask)
    torch.testing.assert_close(again, out.last_hidden_state, atol=ATOL, rtol=ATOL)
    # Layer 0's cross-attention probabilities against the explicit softmax of its projections.
    blk = encoder.layers[0]
    h = blk.attn_norm(x)
    h = x + blk.attn(h)  # pre-norm: self-attention first
    hq = blk.cross_norm(h)
    split = lambda t: t.view(2, -1, HEADS, D // HEADS).transpose(1, 2)  # noqa: E731
    q, k = split(blk.cross_attn.q_proj(hq)), split(blk.cross_attn.k_proj(context))
    want = attention_probabilities(q, k, key_padding_mask=context_mask)
    torch.testing.assert_close(out.cross_attentions[0], want, atol=ATOL, rtol=ATOL)


def test_cross_attention_mask_of_the_wrong_length_is_named():
    encoder = Encoder(TransformerConfig(d_model=D, n_heads=HEADS, n_layers=1, cross_attention=True))
    with pytest.raises(ShapeError, match="encoder_padding_mask must be"):
        encoder(torch.randn(2, 5, D), encoder_states=torch.randn(2, 6, D),
                encoder_padding_mask=torch.ones(2, 5, dtype=torch.bool))
