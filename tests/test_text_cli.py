"""The text commands end to end (``polyformer.cli.main``) on tiny random transformers BERT folders,
checked against transformers' pipelines (or a plain mean of its hidden states) on the same folder,
and on all-MiniLM-L6-v2 when its wheel is installed."""

import io
import json
import re

import numpy as np
import pytest
import torch
from _tiny_bert import minilm_folder, save_tiny_bert, write_vocab

import polyformer
from polyformer.cli import main

transformers = pytest.importorskip("transformers")

LABELS = {0: "question", 1: "statement"}
TEXTS = ["Where does Sarah live?", "Paris is the capital of France.", "Hello, my name is Wolfgang."]
CONTEXT = "My name is Sarah and I live in London. Paris is the capital of France."


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    vocab = write_vocab(tmp_path_factory.mktemp("vocab"))
    root = tmp_path_factory.mktemp("models")
    tags = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    return {
        "cls": save_tiny_bert(root / "cls", vocab, transformers.BertForSequenceClassification, id2label=LABELS,
                              label2id={v: k for k, v in LABELS.items()}),
        "tok": save_tiny_bert(root / "tok", vocab, transformers.BertForTokenClassification, id2label=tags,
                              label2id={v: k for k, v in tags.items()}),
        "mlm": save_tiny_bert(root / "mlm", vocab, transformers.BertForMaskedLM),
        "qa": save_tiny_bert(root / "qa", vocab, transformers.BertForQuestionAnswering),
        "enc": save_tiny_bert(root / "enc", vocab, transformers.BertModel),
    }


def _run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _json(capsys, *argv):
    status, out, err = _run(capsys, *argv, "--json")
    assert status == 0, err
    return json.loads(out)


def _close(a, b):
    if isinstance(b, dict):
        assert set(a) == set(b)
        for k in b:
            _close(a[k], b[k])
    elif isinstance(b, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
    elif isinstance(b, (float, np.floating)):
        assert a == pytest.approx(float(b), abs=1e-4)
    else:
        assert a == b


def test_classify_text_equals_transformers(folders, capsys):
    got = _json(capsys, "classify-text", "--model", folders["cls"], "--top-k", 2, *TEXTS)
    theirs = transformers.pipeline("text-classification", model=str(folders["cls"]))
    assert [g["text"] for g in got] == TEXTS
    _close([g["predictions"] for g in got], theirs(TEXTS, top_k=2))
    status, out, _ = _run(capsys, "classify-text", "--model", folders["cls"], TEXTS[0])
    best = theirs(TEXTS[0])[0]
    assert status == 0 and out.splitlines()[0] == TEXTS[0] and best["label"] in out and f"{best['score']:.4f}" in out
    pairs = _json(capsys, "classify-text", "--model", folders["cls"], TEXTS[0], "--pair", TEXTS[1])
    _close(pairs[0]["predictions"], [theirs({"text": TEXTS[0], "text_pair": TEXTS[1]})])


def test_tag_text_fill_mask_and_answer_equal_transformers(folders, capsys):
    text = "Hello, my name is Wolfgang and I live in Berlin."
    got = _json(capsys, "tag-text", "--model", folders["tok"], text)
    _close(got[0]["entities"], transformers.pipeline("ner", model=str(folders["tok"]), aggregation_strategy="simple")(text))

    masked = "Paris is the [MASK] of France."
    got = _json(capsys, "fill-mask", "--model", folders["mlm"], "--top-k", 3, masked)
    _close(got[0]["fillers"], transformers.pipeline("fill-mask", model=str(folders["mlm"]))(masked, top_k=3))

    got = _json(capsys, "answer", "--model", folders["qa"], "--question", "Where does Sarah live?", "--context", CONTEXT,
                "--top-k", 2)
    expected = polyformer.pipeline("question-answering", model=folders["qa"])(
        question="Where does Sarah live?", context=CONTEXT, top_k=2)
    assert got[0]["question"] == "Where does Sarah live?"
    _close(got[0]["answers"], expected)
    assert all(CONTEXT[a["start"]:a["end"]] == a["answer"] for a in got[0]["answers"])


def test_embed_writes_the_masked_mean(folders, tmp_path, capsys, monkeypatch):
    reference = transformers.AutoModel.from_pretrained(folders["enc"]).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folders["enc"])
    with torch.no_grad():
        expected = np.stack([reference(**tokenizer(t, return_tensors="pt")).last_hidden_state[0].mean(0).numpy()
                             for t in TEXTS])
    out = tmp_path / "emb.npy"
    status, printed, err = _run(capsys, "embed", "--model", folders["enc"], "--out", out, "--batch-size", 2, *TEXTS)
    assert status == 0, err
    assert f"3 embedding(s) of size 32 (mean pooling) written to {out}" in printed
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)

    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(TEXTS[1:]) + "\n\n")
    unit = tmp_path / "unit.npy"
    assert _run(capsys, "embed", "--model", folders["enc"], "--normalize", "--out", unit, TEXTS[0], "--file", lines)[0] == 0
    np.testing.assert_allclose(np.load(unit), expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)

    monkeypatch.setattr("sys.stdin", io.StringIO(TEXTS[2] + "\n"))
    got = _json(capsys, "embed", "--model", folders["enc"], "--file", "-")
    np.testing.assert_allclose(got[0]["embedding"], expected[2], atol=1e-5)
    status, table, _ = _run(capsys, "embed", "--model", folders["enc"], *TEXTS[:2])
    cosine = expected[0] @ expected[1] / np.linalg.norm(expected[0]) / np.linalg.norm(expected[1])
    assert status == 0 and "cosine similarity of 2 text(s)" in table and f"{cosine:6.3f}" in table


@pytest.mark.parametrize("argv,message", [
    (["classify-text", "--model", "{missing}", "hi"], "no such model folder"),
    (["classify-text", "--model", "{enc}", "hi"], "text-classification needs a model with a SequenceClassification "
                                                 "head.*holds a BertModel"),
    (["fill-mask", "--model", "{mlm}", "No mask here."], r"no \[MASK\] in 'No mask here.'"),
    (["fill-mask", "--model", "{mlm}"], "no texts: give them as arguments or with --file"),
    (["embed", "--model", "{enc}", "--out", "{tmp}/emb.txt", "hi"], "end the name in .npy"),
    (["embed", "--model", "{enc}", "--file", "{tmp}/none.txt"], "none.txt: no such file"),
    (["classify-text", "--model", "{cls}", "a", "b", "--pair", "c"], "2 text.s. but 1 --pair"),
    (["tag-text", "--model", "{tok}", "--aggregation", "none", "--stride", "4", "hi"], "stride needs a tokenizer|"
                                                                                       'not "none"'),
    (["classify-text", "--model", "{cls}", "--batch-size", "0", "hi"], "batch_size must be a positive integer"),
    (["answer", "--model", "{qa}", "--question", "Who?", "--context", "  "], "must both be non-empty"),
])
def test_bad_input_is_a_named_error(folders, tmp_path, capsys, argv, message):
    names = {**{k: str(v) for k, v in folders.items()}, "missing": str(tmp_path / "missing"), "tmp": str(tmp_path)}
    status, out, err = _run(capsys, *[a.format(**names) for a in argv])
    assert status == 2 and out == ""
    assert err.startswith(f"polyformer {argv[0]}: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "emb.txt").exists()


@pytest.mark.skipif(minilm_folder() is None, reason="the MiniLM wheel is not installed (make installs it)")
def test_embed_on_minilm_is_sentence_transformers_embedding(tmp_path, capsys):
    folder = minilm_folder()
    sentences = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]
    out = tmp_path / "minilm.npy"
    status, printed, err = _run(capsys, "embed", "--model", folder, "--out", out, *sentences)
    assert status == 0, err
    assert "(mean pooling, unit length)" in printed  # read from the folder's 1_Pooling and modules.json
    got = np.load(out)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    weights = batch["attention_mask"][..., None].float()
    expected = torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    similarity = got @ got.T
    assert similarity[0, 1] > 0.5 > similarity[0, 2]  # the paraphrase is close, the unrelated sentence is not
