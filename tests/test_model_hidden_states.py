"""``output_hidden_states`` / ``output_attentions`` of GPT-2, iGPT and ViT equal Hugging Face's, per layer.

Hugging Face's conventions differ by family: GPT-2 and ImageGPT put the final norm's output last,
ViT the last block's output (its final norm applies to ``last_hidden_state`` only).
"""

import pytest
import torch

import polyformer
from _random_weights import randomise

transformers = pytest.importorskip("transformers")
ATOL = 1e-4


_randomise = randomise


def _hf_and_ours(hf_model, tmp_path):
    hf_model = _randomise(hf_model)
    hf_model.config._attn_implementation = "eager"  # probabilities come from the eager path only
    hf_model.save_pretrained(tmp_path)
    return hf_model, polyformer.from_pretrained(tmp_path)


def _check(ours_out, hf_out, layers):
    assert len(ours_out.hidden_states) == len(hf_out.hidden_states) == layers + 1
    for mine, theirs in zip(ours_out.hidden_states, hf_out.hidden_states):
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)
    assert len(ours_out.attentions) == layers
    for mine, theirs in zip(ours_out.attentions, hf_out.attentions):
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)


def test_gpt2_hidden_states_and_attentions(tmp_path):
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=3, n_head=4,
                                     scale_attn_by_inverse_layer_idx=True)
    hf, ours = _hf_and_ours(transformers.GPT2LMHeadModel(config), tmp_path)
    ids = torch.randint(0, 50, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, -3:] = 0
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        mine = ours(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    _check(mine, theirs, 3)
    torch.testing.assert_close(mine.logits, theirs.logits, atol=ATOL, rtol=0)
    assert mine.hidden_states is not None and ours(ids).hidden_states is None  # only when asked


def test_imagegpt_hidden_states_and_attentions(tmp_path):
    config = transformers.ImageGPTConfig(vocab_size=9, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    hf, ours = _hf_and_ours(transformers.ImageGPTForCausalImageModeling(config), tmp_path)
    ids = torch.randint(0, 9, (2, 16))
    with torch.no_grad():
        _check(ours(ids, output_hidden_states=True, output_attentions=True),
               hf(ids, output_hidden_states=True, output_attentions=True), 2)


def test_vit_hidden_states_and_attentions(tmp_path):
    config = transformers.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=48, num_labels=3)
    hf, ours = _hf_and_ours(transformers.ViTForImageClassification(config), tmp_path)
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        mine = ours(pixels, output_hidden_states=True, output_attentions=True)
        theirs = hf(pixels, output_hidden_states=True, output_attentions=True)
    _check(mine, theirs, 2)
    torch.testing.assert_close(mine.logits, theirs.logits, atol=ATOL, rtol=0)
    assert mine[0] is mine.logits  # no loss: the logits come first, as in Hugging Face's tuples
