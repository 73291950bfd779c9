"""ViT and iGPT run with every registered attention mechanism (read from the registry at collection)."""

import pytest
import torch

from polyformer import attention
from polyformer.attention import patterns
from polyformer.errors import PolyformerError
from polyformer.models.igpt import ImageGPTConfig, ImageGPTForCausalImageModeling
from polyformer.models.vit import ViTConfig, ViTForImageClassification

# Mechanisms that need an option without a default get an example value here.
REQUIRED_OPTIONS = {"sparse": {"pattern": patterns.Band(8, 8) | patterns.Global([0])}}


def _spec(name):
    return attention.AttentionSpec(name, REQUIRED_OPTIONS.get(name, {}))


@pytest.mark.parametrize("name", attention.list())
def test_vit_trains_with_every_mechanism(name):
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=4, d_model=32, n_layers=1, n_heads=4, d_ff=64, num_labels=3,
                       attention=_spec(name))  # 65 tokens
    model = ViTForImageClassification(config)
    try:
        out = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 2]))
    except PolyformerError as error:  # a refusal must be a clear error, e.g. a length rule
        pytest.skip(f"{name} refuses 65 tokens: {error}")
    out.loss.backward()
    assert torch.isfinite(out.logits).all()
    assert model.vit.embeddings.projection.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", attention.list())
def test_igpt_completes_with_every_mechanism(name):
    torch.manual_seed(0)
    config = ImageGPTConfig(vocab_size=5, n_positions=64, d_model=32, n_layers=1, n_heads=4, attention=_spec(name))
    model = ImageGPTForCausalImageModeling(config).double().eval()
    prompt = torch.randint(0, 4, (1, 32))
    try:
        completed = model.complete(prompt, 64, temperature=0)
    except PolyformerError as error:
        pytest.skip(f"{name} refuses cached decoding here: {error}")
    assert completed.shape == (1, 64) and torch.equal(completed[:, :32], prompt)
    if model.transformer.decoder.layers[0].attn.mechanism.consistent_decoding:
        seq = prompt
        for _ in range(32):
            logits = model(model.with_start_token(seq)).logits[:, -1]
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
        assert torch.equal(completed, seq)  # the caches reproduce full causal passes
