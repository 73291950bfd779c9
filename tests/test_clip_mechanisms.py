"""Both CLIP towers run with every registered attention mechanism (read from the registry at collection).

Each mechanism builds both towers, runs them forward (a padded causal text batch; images) and trains
one contrastive backward step; the exact mechanisms (``dense``, ``memory_efficient`` with tiles
smaller than the sequence) must reproduce the dense model's outputs with the same weights.
"""

import pytest
import torch

from polyformer import attention
from polyformer.attention import patterns
from polyformer.errors import PolyformerError
from polyformer.models.clip import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

# Mechanisms that need an option without a default get an example value here.
REQUIRED_OPTIONS = {"sparse": {"pattern": patterns.Band(8, 8) | patterns.Global([0])}}
EXACT = {"dense": {}, "memory_efficient": {"q_chunk": 16, "k_chunk": 24}}
EOS = 59
# (text length, image side): the first pair a mechanism accepts with its default options is used;
# with 4-pixel patches the images give 1 + 64 and 1 + 16 tokens
SIZES = ((64, 32), (32, 16))


def _config(spec, image_size=32):
    text = CLIPTextConfig(vocab_size=60, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_position_embeddings=64,
                          eos_token_id=EOS, attention=spec)
    vision = CLIPVisionConfig(d_model=24, n_layers=2, n_heads=4, d_ff=40, image_size=image_size, patch_size=4,
                              attention=spec)
    return CLIPConfig(text, vision, projection_dim=16)


def _batch(length, side, n=2):
    ids = torch.randint(3, EOS, (n, length))
    mask = torch.ones(n, length, dtype=torch.long)
    ids[0, -1] = EOS
    ids[1, length // 2:] = EOS  # padded with the end-of-text id, as OpenAI's tokenizer pads
    mask[1, length // 2 + 1:] = 0
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(n, 3, side, side)}


@pytest.mark.parametrize("name", attention.list())
def test_both_towers_train_with_every_mechanism(name):
    spec = attention.AttentionSpec(name, REQUIRED_OPTIONS.get(name, {}))
    refusals = []
    for length, side in SIZES:
        model = CLIPModel(_config(spec, side)).train()
        try:
            out = model(**_batch(length, side), return_loss=True)
            break
        except PolyformerError as error:  # a refusal must be a clear error, e.g. a length rule
            refusals.append(f"{length} tokens / {side}px: {error}")
    else:
        pytest.fail(f"{name} refused every size:\n" + "\n".join(refusals))
    out.loss.backward()
    assert torch.isfinite(out.logits_per_image).all() and torch.isfinite(out.loss)
    for tower in (model.text_model.decoder, model.vision_model.encoder):
        layer = tower.layers[0]
        assert layer.attn.mechanism.name == name
        assert layer.attn.q_proj.weight.grad.abs().sum() > 0  # the gradient reaches attention in each tower
    assert model.text_model.embeddings.token_embedding.weight.grad.abs().sum() > 0
    assert model.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_mechanisms_give_the_dense_output(name):
    dense = CLIPModel(_config(attention.AttentionSpec("dense"))).eval()
    other = CLIPModel(_config(attention.AttentionSpec(name, EXACT[name]))).eval()
    other.load_state_dict(dense.state_dict())
    batch = _batch(50, 32)  # 50 text tokens and 65 image tokens: not a multiple of either tile size
    with torch.no_grad():
        expected, got = dense(**batch), other(**batch)
    for field in ("logits_per_image", "text_embeds", "image_embeds"):
        torch.testing.assert_close(getattr(got, field), getattr(expected, field), atol=1e-5, rtol=1e-5)
    for tower in ("text_model_output", "vision_model_output"):
        torch.testing.assert_close(getattr(got, tower).last_hidden_state, getattr(expected, tower).last_hidden_state,
                                   atol=1e-5, rtol=1e-5)


def test_each_tower_may_have_its_own_mechanism(tmp_path):
    """A linear-attention image tower next to a dense text tower, chosen when loading."""
    CLIPModel(_config(attention.AttentionSpec("dense"))).save_pretrained(tmp_path)
    model = CLIPModel.from_pretrained(tmp_path, attention={"vision": "linear"})
    assert model.vision_model.encoder.layers[0].attn.mechanism.name == "linear"
    assert model.text_model.decoder.layers[0].attn.mechanism.name == "dense"
    with torch.no_grad():
        assert torch.isfinite(model(**_batch(16, 32)).logits_per_image).all()
