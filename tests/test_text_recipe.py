"""The BERT recipe: a small BERT trained from scratch on the generated topic sentences (reduced
size, a few seconds), its folder in both libraries' pipelines, the split and the fine-tuning start."""

import json
import re

import numpy as np
import pytest
import torch
from _tiny_bert import save_tiny_bert, write_vocab

import polyformer
from polyformer.cli import main
from polyformer.errors import ConfigError
from polyformer.recipes.text import LABELS, TOPICS, TextTopicsOptions, build_classifier, split, train_text_topics

transformers = pytest.importorskip("transformers")

SMALL = dict(init=None, d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0, threads=1)


def test_split_holds_out_words_and_templates():
    data = split(unseen_words=3, val_templates=3, seed=0)
    train, val, unseen = (set(s for s, _ in data[k]) for k in ("train", "val", "unseen"))
    assert not (train & val) and not (train & unseen) and not (val & unseen)
    assert len(data["train"]) == 4 * 9 * 9 and len(data["val"]) == 4 * 9 * 3 and len(data["unseen"]) == 4 * 3 * 12
    seen_words = {w for t in train for w in re.findall("[a-z]+", t.lower())}
    for sentence, label in data["unseen"]:  # each unseen sentence's topic word is absent from training
        topic_words = set(re.findall("[a-z]+", sentence.lower())) & set(TOPICS[LABELS[label]])
        assert len(topic_words) == 1 and not topic_words & seen_words
    assert split(3, 3, seed=0) == data and split(3, 3, seed=1) != data


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("topics") / "model"
    return train_text_topics(TextTopicsOptions(**SMALL), out, progress=False), out


def test_small_bert_learns_topics_and_its_folder_goes_into_pipelines(trained):
    result, out = trained
    assert result.val_accuracy >= 0.5  # four topics: chance is 0.25
    assert result.unseen_word_accuracy < result.val_accuracy  # a model from scratch cannot know unseen words
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_accuracy"] == result.val_accuracy and metrics["steps"] == result.steps > 50
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()}

    sentences = [s for s, _ in split(3, 3, 0)["val"][::9]]
    ours = polyformer.pipeline("text-classification", model=out)(sentences, top_k=None)
    theirs = transformers.pipeline("text-classification", model=str(out))(sentences, top_k=None)
    for a, b in zip(ours, theirs):  # the saved folder means the same thing to transformers
        assert [r["label"] for r in a] == [r["label"] for r in b]
        np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-4)
    with torch.no_grad():  # and the pipeline reads the trained model's own decision
        batch = result.tokenizer(sentences, padding=True, return_tensors="pt")
        best = result.model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits.argmax(-1)
    assert [a[0]["label"] for a in ours] == [LABELS[int(i)] for i in best]


def test_fine_tuning_starts_from_the_encoder_weights(tmp_path):
    encoder = save_tiny_bert(tmp_path / "enc", write_vocab(tmp_path / "vocab"), transformers.BertModel)
    labels = {str(k): v for k, v in LABELS.items()}
    model = build_classifier({"init": str(encoder), "id2label": labels}, len(LABELS))
    reference = polyformer.from_pretrained(encoder)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.bert.state_dict()[name], value, atol=0, rtol=0)
    assert model.classifier.weight.shape == (4, 32) and model.config.id2label == LABELS
    with pytest.raises(ConfigError, match="the data have 3 classes but id2label names 4"):
        build_classifier({"init": str(encoder), "id2label": labels}, 3)
    with pytest.raises(ConfigError, match="is not a model folder"):
        TextTopicsOptions(init=str(tmp_path)).init_folder()
    with pytest.raises(ConfigError, match="unseen_words must be in"):
        TextTopicsOptions(unseen_words=12)


def test_train_command_writes_a_folder_classify_text_reads(tmp_path, capsys):
    out = tmp_path / "topics"
    assert main(["train", "text-topics", "--init", "scratch", "--epochs", "0.5", "--threads", "1", "--quiet",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "text-topics (from scratch): accuracy" in printed and f"written to {out}" in printed
    assert main(["classify-text", "--model", str(out), "--json", "Will it snow tonight?"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got[0]["predictions"][0]["label"] in set(LABELS.values())
