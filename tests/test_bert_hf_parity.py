"""BERT: tiny random Hugging Face models of several configs, every head, loaded by the production path.

Each model is saved by ``transformers`` and read back with ``polyformer.from_pretrained(folder)``;
outputs and losses must match within 1e-4 (fp32), and what polyformer saves must load in
``transformers`` with the same outputs.
"""

import pytest
import torch

import polyformer
from polyformer.convert import load_state_dict, save_state_dict
from polyformer.models import bert
from _random_weights import randomise

transformers = pytest.importorskip("transformers")
ATOL = 1e-4
VOCAB, N = 99, 12
HEADS = ["BertModel", "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
         "BertForMaskedLM"]
CONFIGS = {
    "gelu": dict(),
    "relu-eps1e-5-one-type": dict(hidden_act="relu", layer_norm_eps=1e-5, type_vocab_size=1),
    "gelu_new-labels-48x3": dict(hidden_act="gelu_new", hidden_size=48, num_attention_heads=3, intermediate_size=50,
                                 id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2}),
    "three-types-3-layers": dict(type_vocab_size=3, num_hidden_layers=3, classifier_dropout=0.3, pad_token_id=5),
}


def _randomise(model):
    return randomise(model, seed=0)


def _hf_config(**kwargs):
    defaults = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=37, max_position_embeddings=40)
    return transformers.BertConfig(**{**defaults, **kwargs})


def _save_hf(folder, architecture, **kwargs):
    """A random HF model of ``architecture``, saved into ``folder`` by transformers itself."""
    model_kwargs = {}
    if "add_pooling_layer" in kwargs:
        model_kwargs["add_pooling_layer"] = kwargs.pop("add_pooling_layer")
    hf = _randomise(getattr(transformers, architecture)(_hf_config(**kwargs), **model_kwargs))
    hf.save_pretrained(folder)
    return hf


def _inputs(type_vocab_size=2, batch=2):
    """Token ids, a padding mask (row 1 ends in 4 pads) and two segments when the model has them."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (batch, N), generator=g)
    mask = torch.ones(batch, N, dtype=torch.long)
    mask[1, -4:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if type_vocab_size > 1:
        types = torch.zeros(batch, N, dtype=torch.long)
        types[:, N // 2:] = type_vocab_size - 1
        inputs["token_type_ids"] = types
    return inputs


FIELDS = {
    "BertModel": ("last_hidden_state", "pooler_output"),
    "BertForSequenceClassification": ("logits",),
    "BertForTokenClassification": ("logits",),
    "BertForQuestionAnswering": ("start_logits", "end_logits"),
    "BertForMaskedLM": ("logits",),
}


def _for_head(architecture, kwargs):
    """QA heads have two outputs (start, end) whatever the label map: HF's own model fails on three."""
    if architecture == "BertForQuestionAnswering":
        return {k: v for k, v in kwargs.items() if k not in ("id2label", "label2id")}
    return kwargs


def _assert_same(ours, theirs, fields):
    for name in fields:
        expected, got = getattr(theirs, name), getattr(ours, name)
        assert expected.abs().max() > 0.1, name  # not a comparison of two near-zero tensors
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=ATOL, msg=name)


@pytest.mark.parametrize("architecture", HEADS)
@pytest.mark.parametrize("kwargs", CONFIGS.values(), ids=CONFIGS.keys())
def test_every_head_matches_transformers(tmp_path, architecture, kwargs):
    kwargs = _for_head(architecture, kwargs)
    hf = _save_hf(tmp_path, architecture, **kwargs)
    ours = polyformer.from_pretrained(tmp_path)
    assert type(ours).__name__ == architecture and not ours.training
    inputs = _inputs(kwargs.get("type_vocab_size", 2))
    with torch.no_grad():
        _assert_same(ours(**inputs), hf(**inputs), FIELDS[architecture])
    if "id2label" in kwargs and architecture != "BertModel":
        assert ours.id2label == kwargs["id2label"]


def test_bert_model_without_pooler_and_with_bert_prefix(tmp_path):
    hf = _save_hf(tmp_path / "plain", "BertModel", add_pooling_layer=False)
    ours = polyformer.from_pretrained(tmp_path / "plain")
    assert ours.pooler is None
    inputs = _inputs()
    with torch.no_grad():
        out = ours(**inputs)
        assert out.pooler_output is None and len(out.to_tuple()) == 1
        _assert_same(out, hf(**inputs), ("last_hidden_state",))
    # The same weights saved with the ``bert.`` prefix of the task models load as well.
    state, _ = load_state_dict(tmp_path / "plain")
    save_state_dict({f"bert.{k}": v for k, v in state.items()}, tmp_path / "plain" / "model.safetensors")
    prefixed = polyformer.from_pretrained(tmp_path / "plain")
    with torch.no_grad():
        torch.testing.assert_close(prefixed(**inputs).last_hidden_state, out.last_hidden_state)


def test_transformers4_checkpoint_with_legacy_buffers_and_tied_copies_loads(tmp_path):
    """transformers 4 saved the position_ids buffer and both copies of the tied decoder."""
    hf = _save_hf(tmp_path, "BertForMaskedLM")
    state, _ = load_state_dict(tmp_path)
    assert "cls.predictions.decoder.weight" not in state  # transformers 5 writes one copy
    state["bert.embeddings.position_ids"] = torch.arange(40)[None]
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    save_state_dict(state, tmp_path / "model.safetensors")
    ours = polyformer.from_pretrained(tmp_path)
    inputs = _inputs()
    with torch.no_grad():
        _assert_same(ours(**inputs), hf(**inputs), ("logits",))


def test_masked_lm_decoder_is_tied_or_untied_as_configured(tmp_path):
    tied = bert.BertForMaskedLM(bert.BertConfig(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=4, d_ff=37))
    assert tied.cls.decoder is None and "cls.decoder.weight" not in tied.state_dict()
    hf = _save_hf(tmp_path, "BertForMaskedLM", tie_word_embeddings=False)
    state, _ = load_state_dict(tmp_path)
    assert not torch.equal(state["cls.predictions.decoder.weight"], state["bert.embeddings.word_embeddings.weight"])
    ours = polyformer.from_pretrained(tmp_path)
    assert ours.cls.decoder is not None
    inputs = _inputs()
    with torch.no_grad():
        _assert_same(ours(**inputs), hf(**inputs), ("logits",))
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.BertForMaskedLM.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(**inputs).logits, hf(**inputs).logits, atol=ATOL, rtol=ATOL)


def _losses_agree(ours, hf, inputs, **labels):
    got, expected = ours(**inputs, **labels).loss, hf(**inputs, **labels).loss
    assert expected > 0.01
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("problem", ["single", "regression", "multi"])
def test_sequence_classification_losses_match(tmp_path, problem):
    num_labels = {"single": 3, "regression": 1, "multi": 4}[problem]
    extra = {"problem_type": "multi_label_classification"} if problem == "multi" else {}
    hf = _save_hf(tmp_path, "BertForSequenceClassification", num_labels=num_labels, **extra)
    ours = polyformer.from_pretrained(tmp_path)
    labels = {"single": torch.tensor([2, 0]), "regression": torch.tensor([0.5, -1.5]),
              "multi": torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]])}[problem]
    with torch.no_grad():
        _losses_agree(ours, hf, _inputs(), labels=labels)


def test_token_qa_and_masked_lm_losses_match(tmp_path):
    inputs = _inputs()
    labels = torch.randint(0, 2, (2, N))
    labels[1, -4:] = -100  # padding is ignored
    hf = _save_hf(tmp_path / "tok", "BertForTokenClassification")
    with torch.no_grad():
        _losses_agree(polyformer.from_pretrained(tmp_path / "tok"), hf, inputs, labels=labels)
    hf = _save_hf(tmp_path / "qa", "BertForQuestionAnswering")
    # the second answer lies beyond the sequence (truncated away): clamped and ignored, as in HF
    with torch.no_grad():
        _losses_agree(polyformer.from_pretrained(tmp_path / "qa"), hf, inputs,
                      start_positions=torch.tensor([3, 50]), end_positions=torch.tensor([5, 60]))
        _losses_agree(polyformer.from_pretrained(tmp_path / "qa"), hf, inputs,
                      start_positions=torch.tensor([3, 1]), end_positions=torch.tensor([5, 7]))
    hf = _save_hf(tmp_path / "mlm", "BertForMaskedLM")
    words = torch.full((2, N), -100)
    words[0, 2], words[1, 5] = 7, 42
    with torch.no_grad():
        _losses_agree(polyformer.from_pretrained(tmp_path / "mlm"), hf, inputs, labels=words)


def test_inputs_embeds_and_position_ids_match(tmp_path):
    hf = _save_hf(tmp_path, "BertModel")
    ours = polyformer.from_pretrained(tmp_path)
    inputs = _inputs()
    embeds = torch.randn(2, N, 32)
    positions = torch.arange(3, 3 + N).expand(2, N)
    with torch.no_grad():
        for extra in ({"inputs_embeds": embeds}, {"input_ids": inputs["input_ids"], "position_ids": positions}):
            args = {"attention_mask": inputs["attention_mask"], **extra}
            _assert_same(ours(**args), hf(**args), FIELDS["BertModel"])


@pytest.mark.parametrize("architecture", HEADS)
def test_save_pretrained_loads_in_transformers_with_same_outputs(tmp_path, architecture):
    kwargs = _for_head(architecture, CONFIGS["gelu_new-labels-48x3"])
    hf = _save_hf(tmp_path / "hf", architecture, **kwargs)
    ours = polyformer.from_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "ours")
    back = getattr(transformers, architecture).from_pretrained(tmp_path / "ours").eval()
    inputs = _inputs()
    with torch.no_grad():
        _assert_same(back(**inputs), hf(**inputs), FIELDS[architecture])
        again = polyformer.from_pretrained(tmp_path / "ours")
        _assert_same(again(**inputs), hf(**inputs), FIELDS[architecture])
    assert back.config.hidden_act == "gelu_new" and back.config.layer_norm_eps == hf.config.layer_norm_eps
    if "id2label" in kwargs and architecture != "BertModel":
        assert back.config.id2label == kwargs["id2label"]


@pytest.mark.parametrize("architecture", ["BertModel", "BertForSequenceClassification"])
def test_hidden_states_and_attentions_of_every_layer_match(tmp_path, architecture):
    hf = _save_hf(tmp_path, architecture, num_hidden_layers=3, attn_implementation="eager")
    ours = polyformer.from_pretrained(tmp_path)
    inputs = _inputs()
    with torch.no_grad():
        expected = hf(**inputs, output_hidden_states=True, output_attentions=True)
        got = ours(**inputs, output_hidden_states=True, output_attentions=True)
        plain = ours(**inputs)
    assert len(got.hidden_states) == len(expected.hidden_states) == 4  # embeddings, then each layer
    assert len(got.attentions) == len(expected.attentions) == 3
    for mine, theirs in zip(got.hidden_states + got.attentions, expected.hidden_states + expected.attentions):
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=ATOL)
    assert got.attentions[0][1, :, :, -4:].abs().max() == 0  # padding gets no attention
    assert plain.hidden_states is None and plain.attentions is None
    assert len(plain.to_tuple()) == len(got.to_tuple()) - 2  # HF's tuple view: the asked-for fields added


@pytest.mark.parametrize("architecture", ["BertForMaskedLM", "BertForSequenceClassification"])
def test_live_state_dict_of_transformers_loads_too(tmp_path, architecture):
    """A state dict taken from a live transformers 5 model (tied copies included) and saved by hand."""
    hf = _save_hf(tmp_path, architecture)
    live = hf.state_dict()
    if architecture == "BertForMaskedLM":
        assert "cls.predictions.decoder.weight" in live and "cls.predictions.decoder.bias" in live
    save_state_dict(live, tmp_path / "model.safetensors")
    ours = polyformer.from_pretrained(tmp_path)
    inputs = _inputs()
    with torch.no_grad():
        _assert_same(ours(**inputs), hf(**inputs), FIELDS[architecture])


def test_pooler_can_be_left_out_when_loading(tmp_path):
    hf = _save_hf(tmp_path, "BertModel")
    ours = bert.BertModel.from_pretrained(tmp_path, add_pooling_layer=False)
    assert ours.pooler is None
    inputs = _inputs()
    with torch.no_grad():
        _assert_same(ours(**inputs), hf(**inputs), ("last_hidden_state",))
    ours.save_pretrained(tmp_path / "no-pooler")
    assert not any("pooler" in k for k in load_state_dict(tmp_path / "no-pooler")[0])
