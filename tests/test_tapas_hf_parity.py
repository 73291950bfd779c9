"""TAPAS: tiny random Hugging Face models of the WTQ-, WikiSQL- and SQA-like configs, loaded by the production path.

Each model is saved by ``transformers`` and read back with ``polyformer.from_pretrained(folder)``;
logits, aggregation logits and losses (strong and weak supervision) must match within 1e-4 (fp32)
on inputs that ``transformers``' own TapasTokenizer makes from a small table, and what polyformer
saves must load in ``transformers`` with the same outputs.
"""

import math

import pytest
import torch

import polyformer
from polyformer.models import tapas
from _random_weights import randomise

transformers = pytest.importorskip("transformers")
pd = pytest.importorskip("pandas")
ATOL = 1e-4
WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] [EMPTY] what is the total number of pages how many chapters have more than "
         "in chapter name start end topic which page does about question answering summarization introduction "
         "classification average , ? . 0 1 2 3 4 5 6 7 8 9").split()
WORDS += ["##" + d for d in "0123456789"]
AGGREGATIONS = {0: "NONE", 1: "SUM", 2: "AVERAGE", 3: "COUNT"}
# transformers' example configs (the fine-tuned checkpoints' values), shrunk to two 32-wide layers
CONFIGS = {
    "wtq": dict(num_aggregation_labels=4, aggregation_labels=AGGREGATIONS, use_answer_as_supervision=True,
                answer_loss_cutoff=0.664694, cell_selection_preference=0.207951, huber_loss_delta=0.121194,
                init_cell_selection_weights_to_zero=True, select_one_column=True, allow_empty_column_selection=False,
                temperature=0.0352513),
    # weak supervision without column selection; no cutoff so the answer loss always counts
    "wikisql-weak": dict(num_aggregation_labels=4, aggregation_labels=AGGREGATIONS, use_answer_as_supervision=True,
                         cell_selection_preference=0.5, huber_loss_delta=25.0, select_one_column=False,
                         average_logits_per_cell=True, positive_label_weight=1.0, temperature=0.107515),
    "wikisql-weak-normalised": dict(num_aggregation_labels=4, use_answer_as_supervision=True,
                                    cell_selection_preference=0.5, use_normalized_answer_loss=True,
                                    average_approximation_function="second_order", aggregation_temperature=0.5,
                                    answer_loss_importance=0.7, select_one_column=True,
                                    allow_empty_column_selection=True),
    "wikisql-supervised": dict(num_aggregation_labels=4, aggregation_labels=AGGREGATIONS,
                               use_answer_as_supervision=False, select_one_column=True, aggregation_loss_weight=0.8,
                               hidden_act="relu"),
    "sqa": dict(),  # TapasConfig's defaults are SQA's: cell selection in one column, no aggregation
    "sqa-absolute-positions-few-rows": dict(reset_position_index_per_cell=False, max_num_rows=3, max_num_columns=3,
                                            select_one_column=False, disable_per_token_loss=False,
                                            positive_label_weight=3.0, layer_norm_eps=1e-5),
}


def _hf_config(**kwargs):
    defaults = dict(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0)
    return transformers.TapasConfig(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("".join(w + "\n" for w in WORDS))
    return transformers.TapasTokenizer(str(vocab))


@pytest.fixture(scope="module")
def batch(tokenizer):
    """Three questions on the chapter table: a lookup (text answer), a sum and a count."""
    table = pd.DataFrame({"chapter": ["1", "2", "3", "4"],
                          "name": ["introduction", "classification", "question answering", "summarization"],
                          "pages": ["10", "36", "24", "46"]})
    queries = ["which chapter is about summarization ?", "what is the total number of pages ?",
               "how many chapters have more than 20 pages ?"]
    coordinates = [[(3, 0)], [(0, 2), (1, 2), (2, 2), (3, 2)], [(1, 2), (2, 2), (3, 2)]]
    answers = [["4"], ["116"], ["3"]]
    enc = tokenizer(table=table, queries=queries, answer_coordinates=coordinates, answer_text=answers,
                    padding="max_length", max_length=40, return_tensors="pt")
    enc = dict(enc)
    enc["float_answer"] = torch.tensor([math.nan, 116.0, 3.0])
    enc["aggregation_labels"] = torch.tensor([0, 1, 3])
    return enc


def _pair(tmp_path, architecture, config_kwargs, seed=0):
    hf = randomise(getattr(transformers, architecture)(_hf_config(**config_kwargs)), seed=seed)
    hf.save_pretrained(tmp_path / "hf")
    ours = polyformer.from_pretrained(tmp_path / "hf")
    assert type(ours).__name__ == architecture
    return hf, ours


def _qa_inputs(batch, config_kwargs, labelled):
    keys = ["input_ids", "attention_mask", "token_type_ids"]
    if labelled:
        keys.append("labels")
        if config_kwargs.get("use_answer_as_supervision"):
            keys += ["float_answer", "numeric_values", "numeric_values_scale"]
        elif config_kwargs.get("num_aggregation_labels"):
            keys.append("aggregation_labels")
    return {k: batch[k] for k in keys}


def _for_hf(inputs, config_kwargs):
    """transformers' token-level selection loss (select_one_column off) fails on the tokenizer's integer
    labels (Bernoulli.log_prob casts to their dtype); it gets them as floats, ours take either."""
    if config_kwargs.get("select_one_column", True) or "labels" not in inputs:
        return inputs
    return {**inputs, "labels": inputs["labels"].float()}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_question_answering_logits_and_loss_match_transformers(tmp_path, batch, name):
    kwargs = CONFIGS[name]
    hf, ours = _pair(tmp_path, "TapasForQuestionAnswering", kwargs)
    inputs = _qa_inputs(batch, kwargs, labelled=True)
    with torch.no_grad():
        expected, got = hf(**_for_hf(inputs, kwargs)), ours(**inputs)
    torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(got.loss, expected.loss, atol=ATOL, rtol=ATOL)
    if kwargs.get("num_aggregation_labels"):
        torch.testing.assert_close(got.logits_aggregation, expected.logits_aggregation, atol=ATOL, rtol=ATOL)
    else:
        assert got.logits_aggregation is None and expected.logits_aggregation is None
    assert got.loss > 0
    # the cell logits do not depend on the labels (transformers fails without labels when
    # select_one_column is off, so the labelled logits are the reference there)
    with torch.no_grad():
        unlabelled = ours(**_qa_inputs(batch, kwargs, labelled=False))
    torch.testing.assert_close(unlabelled.logits, expected.logits, atol=ATOL, rtol=ATOL)
    assert unlabelled.loss is None
    if kwargs.get("select_one_column", True):
        with torch.no_grad():
            reference = hf(**_qa_inputs(batch, kwargs, labelled=False))
        torch.testing.assert_close(unlabelled.logits, reference.logits, atol=ATOL, rtol=ATOL)


def test_weak_supervision_answer_loss_counts(tmp_path, batch):
    """The answer loss is part of the total: a different numeric answer changes both losses alike."""
    kwargs = CONFIGS["wikisql-weak"]
    hf, ours = _pair(tmp_path, "TapasForQuestionAnswering", kwargs)
    inputs = _qa_inputs(batch, kwargs, labelled=True)
    moved = {**inputs, "float_answer": torch.tensor([math.nan, 50.0, 9.0])}
    with torch.no_grad():
        a, b = ours(**inputs).loss, ours(**moved).loss
        torch.testing.assert_close(b, hf(**_for_hf(moved, kwargs)).loss, atol=ATOL, rtol=ATOL)
    assert not torch.isclose(a, b)


def test_question_answering_gradients_match_transformers(tmp_path, batch):
    """Training: the gradient of the weakly supervised loss reaches every weight as in transformers."""
    kwargs = {**CONFIGS["wikisql-weak"], "huber_loss_delta": 1e6}
    hf, ours = _pair(tmp_path, "TapasForQuestionAnswering", kwargs)
    inputs = _qa_inputs(batch, kwargs, labelled=True)
    hf(**_for_hf(inputs, kwargs)).loss.backward()
    ours(**inputs).loss.backward()
    theirs = dict(hf.named_parameters())
    pairs = {"output_weights": "output_weights", "aggregation_classifier.weight": "aggregation_classifier.weight",
             "tapas.embeddings.token_type_embeddings_2.weight": "tapas.embeddings.table_embeddings.1.weight",
             "tapas.encoder.layer.0.attention.self.query.weight": "tapas.encoder.layers.0.attn.q_proj.weight"}
    mine = dict(ours.named_parameters())
    for hf_name, our_name in pairs.items():
        assert theirs[hf_name].grad.abs().sum() > 0
        torch.testing.assert_close(mine[our_name].grad, theirs[hf_name].grad, atol=1e-4, rtol=1e-3)


def test_random_token_types_with_clamped_rows_and_padding(tmp_path):
    """Random ids and token types over the whole type vocabularies (rows and columns beyond the head's limits)."""
    kwargs = dict(num_aggregation_labels=3, max_num_rows=5, max_num_columns=4, type_vocab_sizes=[3, 9, 9, 2, 9, 9, 10],
                  aggregation_labels=None, use_answer_as_supervision=False)
    hf, ours = _pair(tmp_path, "TapasForQuestionAnswering", kwargs, seed=3)
    g = torch.Generator().manual_seed(5)
    b, n = 3, 24
    types = torch.stack([torch.randint(0, s, (b, n), generator=g) for s in (3, 9, 9, 2, 9, 9, 10)], dim=-1)
    types[:, :4, 1:3] = 0  # a question
    mask = torch.ones(b, n, dtype=torch.long)
    mask[1, -6:] = 0
    inputs = dict(input_ids=torch.randint(0, len(WORDS), (b, n), generator=g), attention_mask=mask,
                  token_type_ids=types, labels=torch.randint(0, 2, (b, n), generator=g),
                  aggregation_labels=torch.tensor([0, 2, 1]))
    with torch.no_grad():
        expected, got = hf(**inputs), ours(**inputs)
        for field in ("loss", "logits", "logits_aggregation"):
            torch.testing.assert_close(getattr(got, field), getattr(expected, field), atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("name", ["sqa", "wtq"])
def test_base_model_matches_transformers(tmp_path, batch, name):
    hf, ours = _pair(tmp_path, "TapasModel", CONFIGS[name])
    inputs = _qa_inputs(batch, {}, labelled=False)
    with torch.no_grad():
        expected = hf(**inputs, output_hidden_states=True, output_attentions=True)
        got = ours(**inputs, output_hidden_states=True, output_attentions=True)
    for field in ("last_hidden_state", "pooler_output"):
        torch.testing.assert_close(getattr(got, field), getattr(expected, field), atol=ATOL, rtol=ATOL)
    for g, e in zip(got.hidden_states + got.attentions, expected.hidden_states + expected.attentions, strict=True):
        torch.testing.assert_close(g, e, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("labels", [torch.tensor([1, 0, 1]), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])])
def test_sequence_classification_matches_transformers(tmp_path, batch, labels):
    hf, ours = _pair(tmp_path, "TapasForSequenceClassification",
                     dict(id2label={0: "refuted", 1: "entailed"}, label2id={"refuted": 0, "entailed": 1}))
    inputs = {**_qa_inputs(batch, {}, labelled=False), "labels": labels}
    with torch.no_grad():
        expected, got = hf(**inputs), ours(**inputs)
    torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(got.loss, expected.loss, atol=ATOL, rtol=ATOL)
    assert ours.id2label == {0: "refuted", 1: "entailed"}


@pytest.mark.parametrize("architecture,name", [("TapasForQuestionAnswering", "wtq"),
                                               ("TapasForQuestionAnswering", "wikisql-weak"),
                                               ("TapasForQuestionAnswering", "sqa"),
                                               ("TapasForSequenceClassification", "sqa"), ("TapasModel", "sqa")])
def test_saved_folder_loads_in_transformers_with_the_same_outputs(tmp_path, batch, architecture, name):
    kwargs = CONFIGS[name]
    hf, ours = _pair(tmp_path, architecture, kwargs, seed=7)
    ours.save_pretrained(tmp_path / "ours")
    back = getattr(transformers, architecture).from_pretrained(tmp_path / "ours").eval()
    for key in ("type_vocab_sizes", "num_aggregation_labels", "use_answer_as_supervision", "huber_loss_delta",
                "select_one_column", "temperature", "answer_loss_cutoff", "aggregation_labels",
                "reset_position_index_per_cell", "max_position_embeddings"):
        theirs, again = getattr(hf.config, key), getattr(back.config, key)
        assert (list(again) if isinstance(again, tuple) else again) == (
            list(theirs) if isinstance(theirs, tuple) else theirs), key
    labelled = architecture == "TapasForQuestionAnswering"
    inputs = _qa_inputs(batch, kwargs, labelled=labelled)
    with torch.no_grad():
        expected, got = hf(**_for_hf(inputs, kwargs)), back(**_for_hf(inputs, kwargs))
    for field in ("loss", "logits", "logits_aggregation", "last_hidden_state", "pooler_output"):
        if getattr(expected, field, None) is not None:
            torch.testing.assert_close(getattr(got, field), getattr(expected, field), atol=1e-6, rtol=1e-6)
    # and the saved state is complete: transformers reports nothing missing or unexpected
    _, info = getattr(transformers, architecture).from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_config_json_round_trip(tmp_path):
    config = tapas.TapasConfig.from_hf(_hf_config(**CONFIGS["wtq"]).to_dict())
    assert config.aggregation_labels == AGGREGATIONS and config.temperature == 0.0352513
    assert config.type_vocab_sizes == (3, 256, 256, 2, 256, 256, 10) and config.type_vocab_size == 3
    assert config.weakly_supervised and config.max_position_embeddings == 64
    written = config.to_hf("TapasForQuestionAnswering")
    assert "type_vocab_size" not in written and "position_embedding_type" not in written
    assert transformers.TapasConfig(**written).huber_loss_delta == 0.121194
