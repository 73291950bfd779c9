"""BERT runs with every registered attention mechanism (read from the registry at collection).

Each mechanism builds, runs forward on a padded batch and trains one backward step; the exact
mechanisms (``dense``, ``memory_efficient`` with tiles smaller than the sequence) must reproduce the
dense model's output with the same weights.
"""

import pytest
import torch

from polyformer import attention
from polyformer.attention import patterns
from polyformer.errors import PolyformerError
from polyformer.models.bert import BertConfig, BertForMaskedLM, BertModel

# Mechanisms that need an option without a default get an example value here.
REQUIRED_OPTIONS = {"sparse": {"pattern": patterns.Band(8, 8) | patterns.Global([0])}}
LENGTHS = (128, 64)  # the first length a mechanism accepts with its default options is used
EXACT = {"dense": {}, "memory_efficient": {"q_chunk": 16, "k_chunk": 24}}


def _config(spec):
    return BertConfig(vocab_size=60, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_position_embeddings=128,
                      dropout=0.0, attention=spec)


def _batch(length):
    ids = torch.randint(0, 60, (2, length))
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, -length // 4:] = 0
    types = (torch.arange(length) >= length // 2).long().expand(2, length)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.mark.parametrize("name", attention.list())
def test_bert_trains_with_every_mechanism(name):
    model = BertForMaskedLM(_config(attention.AttentionSpec(name, REQUIRED_OPTIONS.get(name, {})))).train()
    refusals = []
    for length in LENGTHS:
        batch = _batch(length)
        labels = torch.full((2, length), -100)
        labels[:, 3] = 7
        try:
            out = model(**batch, labels=labels)
            break
        except PolyformerError as error:  # a refusal must be a clear error, e.g. a length rule
            refusals.append(f"length {length}: {error}")
    else:
        pytest.fail(f"{name} refused every length:\n" + "\n".join(refusals))
    out.loss.backward()
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    layer = model.bert.encoder.layers[0]
    assert layer.attn.mechanism.name == name
    assert layer.attn.q_proj.weight.grad.abs().sum() > 0  # the gradient reaches attention
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_mechanisms_give_the_dense_output(name):
    dense = BertModel(_config(attention.AttentionSpec("dense"))).eval()
    other = BertModel(_config(attention.AttentionSpec(name, EXACT[name]))).eval()
    other.load_state_dict(dense.state_dict())
    batch = _batch(80)  # not a multiple of either tile size
    with torch.no_grad():
        expected, got = dense(**batch), other(**batch)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-5, rtol=1e-5)
