"""GPT-2, GPT-Neo and GPT-J checkpoints: tiny random Hugging Face models through the production
converter give the same logits (fp32, 1e-4), and our checkpoints load back into Hugging Face."""

import json

import pytest
import torch

import polyformer
from polyformer.models.gpt import GPTConfig, GPTLMHeadModel
from _random_weights import randomise

transformers = pytest.importorskip("transformers")

VOCAB, D, HEADS = 61, 32, 4
ATOL = 1e-4


_randomise = randomise


def _gpt2(**extra):
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=24, n_embd=D, n_layer=2, n_head=HEADS, **extra)
    return _randomise(transformers.GPT2LMHeadModel(config))


def _gpt_neo():
    # three layers (global, local, global) and a window of 4 shorter than the inputs: locality matters
    config = transformers.GPTNeoConfig(
        vocab_size=VOCAB, max_position_embeddings=24, hidden_size=D, num_layers=3, num_heads=HEADS,
        attention_types=[[["global", "local"], 1], [["global"], 1]], window_size=4, intermediate_size=48,
    )
    return _randomise(transformers.GPTNeoForCausalLM(config))


def _gptj():
    config = transformers.GPTJConfig(vocab_size=VOCAB, n_positions=24, n_embd=D, n_layer=2, n_head=HEADS, rotary_dim=4)
    return _randomise(transformers.GPTJForCausalLM(config))


BUILDERS = {"gpt2": _gpt2, "gpt_neo": _gpt_neo, "gptj": _gptj}


def _batch(left_padding: bool):
    ids = torch.randint(0, VOCAB, (2, 11))
    mask = torch.ones(2, 11, dtype=torch.long)
    if left_padding:
        mask[1, :4] = 0
    else:
        mask[1, -4:] = 0
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def _compare(ours, hf, left_padding=False):
    ids, mask, position_ids = _batch(left_padding)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, position_ids=position_ids).logits
        got = ours(ids, attention_mask=mask, position_ids=position_ids).logits
        real = mask.bool()
        torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=ATOL)
        # and without any mask
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("variant", list(BUILDERS))
@pytest.mark.parametrize("left_padding", [False, True], ids=["right-pad", "left-pad"])
def test_hf_checkpoint_gives_hf_logits(variant, left_padding, tmp_path):
    hf = BUILDERS[variant]()
    hf.save_pretrained(tmp_path)
    ours = polyformer.from_pretrained(tmp_path)
    assert isinstance(ours, GPTLMHeadModel) and ours.config.variant == variant
    _compare(ours, hf, left_padding)


@pytest.mark.parametrize("variant", list(BUILDERS))
def test_pytorch_model_bin_checkpoint(variant, tmp_path):
    hf = BUILDERS[variant]()
    hf.config.save_pretrained(tmp_path)
    # The legacy format, causal-mask buffers included as older checkpoints carry them.
    state = dict(hf.state_dict())
    for i in range(hf.config.num_hidden_layers):
        prefix = f"transformer.h.{i}.attn.attention" if variant == "gpt_neo" else f"transformer.h.{i}.attn"
        state[f"{prefix}.bias"] = torch.tril(torch.ones(1, 1, 24, 24, dtype=torch.bool))
        state[f"{prefix}.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, tmp_path / "pytorch_model.bin")
    _compare(GPTLMHeadModel.from_pretrained(tmp_path), hf)


@pytest.mark.parametrize("variant", list(BUILDERS))
def test_our_checkpoint_loads_into_hf(variant, tmp_path):
    hf = BUILDERS[variant]()
    hf.save_pretrained(tmp_path / "hf")
    ours = GPTLMHeadModel.from_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "ours")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert type(again) is type(hf)
    _compare(ours, again)
    reloaded = GPTLMHeadModel.from_pretrained(tmp_path / "ours")
    assert reloaded.config == ours.config


def test_gpt2_score_scaling_switches_match_hf(tmp_path):
    hf = _gpt2(scale_attn_by_inverse_layer_idx=True, scale_attn_weights=False)
    hf.save_pretrained(tmp_path)
    _compare(polyformer.from_pretrained(tmp_path), hf)


def test_gpt_neo_local_layers_use_the_sliding_window(tmp_path):
    hf = _gpt_neo()
    hf.save_pretrained(tmp_path)
    ours = polyformer.from_pretrained(tmp_path)
    assert ours.config.attention_layers == ("global", "local", "global")
    assert ours.decoder.layers[1].attn.mechanism.name == "sliding_window"
    assert ours.decoder.layers[1].attn.mechanism.options.window == 4
    assert ours.decoder.layers[0].attn.mechanism.name == "dense"
    # Making the local layer global changes the logits: the window matters in this test.
    ids = torch.randint(0, VOCAB, (1, 12))
    everywhere_dense = GPTLMHeadModel.from_pretrained(tmp_path, local_attention="dense")
    with torch.no_grad():
        assert not torch.allclose(everywhere_dense(ids).logits, hf(ids).logits, atol=1e-2)


def test_config_round_trips_through_hf_config_json():
    for variant, build in BUILDERS.items():
        raw = build().config.to_dict()
        config = GPTConfig.from_hf(raw)
        assert GPTConfig.from_hf(json.loads(json.dumps(config.to_hf()))) == config


def test_gpt2_checkpoint_without_the_transformer_prefix(tmp_path):
    """OpenAI's original GPT-2 weights name the base model's keys without "transformer." and store no head."""
    from polyformer.convert import save_state_dict

    hf = _gpt2()
    hf.config.save_pretrained(tmp_path)
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if not k.startswith("lm_head.")}
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 24, 24))
    save_state_dict(state, tmp_path / "model.safetensors")
    _compare(polyformer.from_pretrained(tmp_path), hf)
