"""BERT without transformers: config.json round trip, weight init, the embeddings' sum, named errors."""

import json

import pytest
import torch
import torch.nn.functional as F

import polyformer
from polyformer.convert import load_state_dict, save_state_dict
from polyformer.errors import CheckpointError, ConfigError, ShapeError
from polyformer.models.bert import (
    BertConfig, BertEmbeddings, BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification, BertModel,
)
from polyformer.models.heads import span_loss, token_cross_entropy

SMALL = dict(vocab_size=50, d_model=16, n_layers=1, n_heads=2, d_ff=24, max_position_embeddings=10)


def test_config_json_round_trip_with_hf_names():
    config = BertConfig(**SMALL, activation="relu", norm_eps=1e-6, type_vocab_size=1, id2label={0: "x", 1: "y", 2: "z"},
                        problem_type="single_label_classification", classifier_dropout=0.2, attention="bigbird",
                        tie_word_embeddings=False)
    hf = json.loads(json.dumps(config.to_hf("BertForTokenClassification")))
    assert hf["hidden_size"] == 16 and hf["num_hidden_layers"] == 1 and hf["intermediate_size"] == 24
    assert hf["hidden_act"] == "relu" and hf["layer_norm_eps"] == 1e-6 and hf["type_vocab_size"] == 1
    assert hf["label2id"] == {"x": 0, "y": 1, "z": 2} and hf["architectures"] == ["BertForTokenClassification"]
    assert hf["polyformer"]["attention"]["name"] == "bigbird"
    assert BertConfig.from_hf(hf) == config
    assert "polyformer" not in BertConfig(**SMALL).to_hf()  # dense needs no entry
    assert BertConfig.from_hf({"model_type": "bert"}) == BertConfig()  # absent keys: Hugging Face's defaults
    assert BertConfig.from_hf({"model_type": "bert", "pad_token_id": None}).pad_token_id is None  # null: no padding


def test_weight_init_follows_hugging_face():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=400, d_model=64, n_layers=1, n_heads=4, d_ff=128, initializer_range=0.05,
                        pad_token_id=3)
    model = BertForMaskedLM(config)
    words = model.bert.embeddings.word_embeddings.weight
    assert torch.equal(words[3], torch.zeros(64))  # the padding vector starts at zero
    for w in (words, model.bert.encoder.layers[0].attn.q_proj.weight, model.bert.embeddings.position_embeddings.weight):
        assert abs(w.std().item() - 0.05) < 0.006 and abs(w.mean().item()) < 0.01
    layer = model.bert.encoder.layers[0]
    assert torch.equal(layer.mlp.fc_in.bias, torch.zeros(128)) and torch.equal(model.cls.bias, torch.zeros(400))
    assert torch.equal(layer.attn_norm.weight, torch.ones(64)) and torch.equal(model.cls.transform.norm.bias,
                                                                              torch.zeros(64))


def test_embeddings_sum_extra_vectors_before_the_norm():
    config = BertConfig(**SMALL, dropout=0.0)
    emb = BertEmbeddings(config).eval()
    ids, types = torch.randint(0, 50, (2, 6)), torch.tensor([[0, 0, 0, 1, 1, 1]] * 2)
    extra = torch.randn(2, 6, 16)
    by_hand = (emb.word_embeddings.weight[ids] + emb.token_type_embeddings.weight[types]
               + emb.position_embeddings.weight[:6] + extra)
    expected = F.layer_norm(by_hand, (16,), emb.norm.weight, emb.norm.bias, 1e-12)
    torch.testing.assert_close(emb(ids, types, extra=[extra]), expected)


def test_heads_losses_against_closed_forms():
    logits, labels = torch.randn(2, 3, 4), torch.tensor([[1, -100, 3], [0, 2, -100]])
    kept = [(0, 0), (0, 2), (1, 0), (1, 1)]
    by_hand = -sum(F.log_softmax(logits[b, t], -1)[labels[b, t]] for b, t in kept) / len(kept)
    torch.testing.assert_close(token_cross_entropy(logits, labels), by_hand)
    start, end = torch.randn(2, 5), torch.randn(2, 5)
    # the second example's answer was truncated away (position >= length): it is ignored
    loss = span_loss(start, end, torch.tensor([1, 9]), torch.tensor([3, 9]))
    expected = (-F.log_softmax(start[0], -1)[1] - F.log_softmax(end[0], -1)[3]) / 2
    torch.testing.assert_close(loss, expected)


def _saved(tmp_path, cls, **config):
    model = cls(BertConfig(**SMALL, **config))
    model.save_pretrained(tmp_path)
    return model


def test_label_map_that_does_not_fit_the_classifier_is_named(tmp_path):
    for cls in (BertForSequenceClassification, BertForTokenClassification):
        _saved(tmp_path, cls, num_labels=5)
        raw = json.loads((tmp_path / "config.json").read_text())
        raw["id2label"], raw["label2id"] = {"0": "a", "1": "b", "2": "c"}, {"a": 0, "b": 1, "c": 2}
        (tmp_path / "config.json").write_text(json.dumps(raw))
        with pytest.raises(CheckpointError, match="classifier.weight has 5 rows .* id2label names 3"):
            polyformer.from_pretrained(tmp_path)


def test_unsupported_configs_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="position_embedding_type 'relative_key' is not supported"):
        BertConfig(**SMALL, position_embedding_type="relative_key")
    _saved(tmp_path, BertModel)
    raw = json.loads((tmp_path / "config.json").read_text())
    for change, message in [({"position_embedding_type": "relative_key"}, "config.json: .*relative_key"),
                            ({"is_decoder": True}, "is_decoder=true .* not supported"),
                            ({"hidden_size": 15}, "divisible by n_heads"),
                            ({"architectures": ["BertForNextSentencePrediction"]}, "supported: Bert")]:
        (tmp_path / "config.json").write_text(json.dumps({**raw, **change}))
        with pytest.raises(CheckpointError, match=message):
            polyformer.from_pretrained(tmp_path)


def test_missing_and_unexpected_weights_are_named(tmp_path):
    _saved(tmp_path, BertForSequenceClassification)
    state, _ = load_state_dict(tmp_path)
    del state["bert.encoder.layer.0.output.LayerNorm.weight"]
    state["bert.encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(3)
    save_state_dict(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing weights: bert.encoder.layers.0.mlp_norm.weight.*"
                                              r"unexpected weights: bert.encoder.layer.0.attention.self.rotary"):
        polyformer.from_pretrained(tmp_path)


def test_bad_inputs_raise_named_errors():
    model = BertModel(BertConfig(**SMALL, type_vocab_size=1)).eval()
    ids = torch.randint(0, 50, (2, 6))
    with pytest.raises(ShapeError, match="12 tokens but max_position_embeddings is 10; truncate"):
        model(input_ids=torch.randint(0, 50, (1, 12)))
    with pytest.raises(ShapeError, match=r"token_type_ids must be integers in \[0, type_vocab_size=1\).*one segment"):
        model(input_ids=ids, token_type_ids=torch.ones(2, 6, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"input_ids must be \(batch, length\), got \(6,\)"):
        model(input_ids=ids[0])
    with pytest.raises(ShapeError, match=r"attention_mask must be \(batch, length\) = \(2, 6\), got \(2, 5\)"):
        model(input_ids=ids, attention_mask=torch.ones(2, 5))
    with pytest.raises(ShapeError, match=r"token_type_ids must be \(batch, length\) = \(2, 6\)"):
        model(input_ids=ids, token_type_ids=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ShapeError, match="exactly one of input_ids"):
        model(input_ids=ids, inputs_embeds=torch.randn(2, 6, 16))
    with pytest.raises(ShapeError, match=r"inputs_embeds must be \(batch, length, 16\)"):
        model(inputs_embeds=torch.randn(2, 6, 8))
    with pytest.raises(ShapeError, match=r"ids must lie in \[0, 50\)"):
        model(input_ids=ids + 50)
