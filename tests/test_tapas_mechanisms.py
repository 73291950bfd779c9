"""TAPAS runs with every registered attention mechanism (read from the registry at collection).

Each mechanism builds, runs forward on a padded batch of table token types and trains one backward
step of the question-answering loss (strong supervision, with aggregation); the exact mechanisms
(``dense``, ``memory_efficient`` with tiles smaller than the sequence) must reproduce the dense
model's output with the same weights.
"""

import pytest
import torch

from polyformer import attention
from polyformer.attention import patterns
from polyformer.errors import PolyformerError
from polyformer.models.tapas import TapasConfig, TapasForQuestionAnswering

# Mechanisms that need an option without a default get an example value here.
REQUIRED_OPTIONS = {"sparse": {"pattern": patterns.Band(8, 8) | patterns.Global([0])}}
LENGTHS = (128, 64)  # the first length a mechanism accepts with its default options is used
EXACT = {"dense": {}, "memory_efficient": {"q_chunk": 16, "k_chunk": 24}}
SIZES = (3, 12, 12, 2, 12, 12, 10)


def _config(spec):
    return TapasConfig(vocab_size=60, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_position_embeddings=128,
                       dropout=0.0, type_vocab_sizes=SIZES, num_aggregation_labels=4, attention=spec)


def _batch(length, seed=0):
    """A question of 8 tokens, then a table of 3 columns whose cells are 2 tokens long; the second example padded."""
    g = torch.Generator().manual_seed(seed)
    types = torch.zeros(2, length, 7, dtype=torch.long)
    cell = torch.arange(length - 8) // 2  # cell number of each table token
    types[:, 8:, 0] = 1
    types[:, 8:, 1] = cell % 3 + 1
    types[:, 8:, 2] = (cell // 3).clamp(max=SIZES[2] - 1)
    types[:, 8:, 4] = torch.randint(0, SIZES[4], (length - 8,), generator=g)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, -length // 4:] = 0
    types[1, -length // 4:] = 0
    labels = torch.zeros(2, length, dtype=torch.long)
    labels[:, 8:14] = (types[:, 8:14, 1] == 2).long()
    return {"input_ids": torch.randint(0, 60, (2, length), generator=g), "attention_mask": mask,
            "token_type_ids": types, "labels": labels, "aggregation_labels": torch.tensor([1, 3])}


@pytest.mark.parametrize("name", attention.list())
def test_tapas_trains_with_every_mechanism(name):
    model = TapasForQuestionAnswering(_config(attention.AttentionSpec(name, REQUIRED_OPTIONS.get(name, {})))).train()
    refusals = []
    for length in LENGTHS:
        try:
            out = model(**_batch(length))
            break
        except PolyformerError as error:  # a refusal must be a clear error, e.g. a length rule
            refusals.append(f"length {length}: {error}")
    else:
        pytest.fail(f"{name} refused every length:\n" + "\n".join(refusals))
    out.loss.backward()
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    layer = model.tapas.encoder.layers[0]
    assert layer.attn.mechanism.name == name
    assert layer.attn.q_proj.weight.grad.abs().sum() > 0  # the gradient reaches attention
    assert model.tapas.embeddings.table_embeddings[1].weight.grad.abs().sum() > 0  # and the row table
    assert model.aggregation_classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_mechanisms_give_the_dense_output(name):
    dense = TapasForQuestionAnswering(_config(attention.AttentionSpec("dense"))).eval()
    other = TapasForQuestionAnswering(_config(attention.AttentionSpec(name, EXACT[name]))).eval()
    other.load_state_dict(dense.state_dict())
    batch = _batch(80)  # not a multiple of either tile size
    with torch.no_grad():
        expected, got = dense(**batch), other(**batch)
    for field in ("logits", "logits_aggregation", "loss"):
        torch.testing.assert_close(getattr(got, field), getattr(expected, field), atol=1e-5, rtol=1e-5)
