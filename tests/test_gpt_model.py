"""The GPT family beyond logits: loss, parameter counts, caches, mechanism swaps and bad input."""

import json

import pytest
import torch

import polyformer
from polyformer.convert import load_state_dict, save_state_dict
from polyformer.errors import CheckpointError, ConfigError, ShapeError
from polyformer.models.gpt import GPTConfig, GPTLMHeadModel

transformers = pytest.importorskip("transformers")

VOCAB = 53


def _config(variant="gpt2", **extra):
    if variant == "gpt_neo":
        extra.setdefault("attention_layers", ("global", "local"))
        extra.setdefault("window_size", 3)
    return GPTConfig(vocab_size=VOCAB, n_positions=32, d_model=32, n_layers=2, n_heads=4, variant=variant, **extra)


def _hf_gpt2_folder(tmp_path):
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path)
    return model


def test_loss_matches_hf_with_ignored_labels(tmp_path):
    hf = _hf_gpt2_folder(tmp_path)
    ours = polyformer.from_pretrained(tmp_path)
    ids = torch.randint(0, VOCAB, (3, 9))
    labels = ids.clone()
    labels[0, :4] = -100
    labels[2, 5:] = -100
    with torch.no_grad():
        expected = hf(ids, labels=labels).loss
        got = ours(ids, labels=labels).loss
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # and against the definition: mean over kept (t -> t+1) pairs
    logits = ours(ids).logits.detach()
    pairs = [(b, t) for b in range(3) for t in range(8) if labels[b, t + 1] != -100]
    manual = torch.stack([torch.nn.functional.cross_entropy(logits[b, t], labels[b, t + 1]) for b, t in pairs]).mean()
    torch.testing.assert_close(got, manual, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant,hf_class", [("gpt2", "GPT2LMHeadModel"), ("gptj", "GPTJForCausalLM")])
def test_num_parameters_matches_hf(variant, hf_class, tmp_path):
    model = GPTLMHeadModel(_config(variant))
    model.save_pretrained(tmp_path)
    hf = getattr(transformers, hf_class).from_pretrained(tmp_path)
    assert model.num_parameters() == hf.num_parameters()
    embeddings = VOCAB * 32 + (32 * 32 if variant == "gpt2" else 0)
    assert model.num_parameters(exclude_embeddings=True) == model.num_parameters() - embeddings


@pytest.mark.parametrize("variant", ["gpt2", "gpt_neo", "gptj"])
def test_decoding_with_caches_equals_the_full_forward(variant):
    model = GPTLMHeadModel(_config(variant)).eval()
    ids = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        caches = model.new_caches()
        steps = [model(ids[:, :5], caches=caches).logits]
        steps += [model(ids[:, t : t + 1], caches=caches).logits for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_pretrained_gpt2_with_sliding_window_attention_keeps_it_through_save_and_load(tmp_path):
    _hf_gpt2_folder(tmp_path / "hf")
    model = GPTLMHeadModel.from_pretrained(tmp_path / "hf", attention={"name": "sliding_window", "options": {"window": 4}})
    assert all(layer.attn.mechanism.name == "sliding_window" for layer in model.decoder.layers)
    ids = torch.randint(0, VOCAB, (1, 10))
    dense = GPTLMHeadModel.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        windowed = model(ids).logits
        # the first 4 positions see the same keys either way; later ones do not
        torch.testing.assert_close(windowed[:, :4], dense(ids).logits[:, :4], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(windowed[:, 4:], dense(ids).logits[:, 4:], atol=1e-3)
    model.save_pretrained(tmp_path / "ours")
    raw = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert raw["polyformer"]["attention"] == {"name": "sliding_window", "options": {"window": 4}}
    again = polyformer.from_pretrained(tmp_path / "ours")
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, windowed)
    # Hugging Face ignores the extra key and loads the dense model
    transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours")


def test_with_attention_keeps_gpt_neo_local_layers_local_unless_told():
    config = _config("gpt_neo")
    swapped = config.with_attention("sliding_window")
    assert swapped.transformer_config().attention_for(0).name == "sliding_window"
    assert swapped.transformer_config().attention_for(1).options == {"window": 3}
    everywhere = config.with_attention("dense", local="dense")
    assert [everywhere.transformer_config().attention_for(i).name for i in range(2)] == ["dense", "dense"]
    assert GPTConfig.from_hf(everywhere.to_hf()) == everywhere


def test_training_step_reduces_the_loss():
    torch.manual_seed(0)
    model = GPTLMHeadModel(_config("gpt2", dropout=0.1))
    ids = torch.randint(0, VOCAB, (4, 16))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(ids, labels=ids).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    assert model.lm_head.weight is model.wte.weight  # still tied after the optimiser


# -- bad input -------------------------------------------------------------------------------------
def test_missing_unexpected_and_misshaped_weights_are_named(tmp_path):
    _hf_gpt2_folder(tmp_path)
    state, _ = load_state_dict(tmp_path)
    del state["transformer.h.1.ln_2.bias"]
    state["transformer.h.0.attn.rotary.weight"] = torch.ones(3)
    state["transformer.wpe.weight"] = torch.ones(16, 32)
    save_state_dict(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        polyformer.from_pretrained(tmp_path)
    message = str(error.value)
    assert "missing weights: decoder.layers.1.mlp_norm.bias" in message
    assert "unexpected weights: transformer.h.0.attn.rotary.weight" in message
    assert "wpe.weight (checkpoint (16, 32), model (32, 32))" in message


def test_unknown_model_type_lists_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt5"}))
    with pytest.raises(CheckpointError, match=r"model_type 'gpt5' is not supported; supported types: .*gpt2, gpt_neo, gptj"):
        polyformer.from_pretrained(tmp_path)


def test_input_longer_than_the_context_says_so():
    model = GPTLMHeadModel(_config())
    with pytest.raises(ShapeError, match="40 positions .* exceed the context of 32; truncate"):
        model(torch.zeros(1, 40, dtype=torch.long))


def test_bad_configs_name_the_field():
    with pytest.raises(ConfigError, match="variant must be one of gpt2, gpt_neo, gptj"):
        _config("gpt3")
    with pytest.raises(ConfigError, match="attention_layers has 1 entries for 2 layers"):
        _config("gpt_neo", attention_layers=("local",))
    with pytest.raises(ConfigError, match="rotary_dim must be an even number"):
        _config("gptj", rotary_dim=9)
    with pytest.raises(ConfigError, match="unknown attention mechanism 'nope'"):
        _config(attention="nope")
    with pytest.raises(CheckpointError, match="missing 'n_embd'"):
        GPTConfig.from_hf({"model_type": "gpt2", "vocab_size": 5, "n_positions": 4, "n_layer": 1, "n_head": 1})


def test_logits_are_formed_on_request_when_the_loss_is_fused(tmp_path):
    hf = _hf_gpt2_folder(tmp_path)
    ours = polyformer.from_pretrained(tmp_path)
    ids = torch.randint(0, VOCAB, (2, 9))
    out = ours(ids, labels=ids)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, ours(ids).logits)
        # under bf16 autocast the loss stays close to Hugging Face's (bf16 matmuls, float32 loss)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, expected = ours(ids, labels=ids).loss, hf(ids, labels=ids).loss
    assert abs(got.item() - expected.item()) < 1e-2
