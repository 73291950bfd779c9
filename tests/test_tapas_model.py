"""TAPAS without transformers: config.json round trip, the seven embeddings and per-cell positions
against loops, head initialisation, strict loading, the attention override and named errors."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import polyformer
from polyformer.convert import load_state_dict, save_state_dict
from polyformer.errors import CheckpointError, ConfigError, PolyformerError, ShapeError
from polyformer.models.tapas import (
    TapasConfig, TapasEmbeddings, TapasForQuestionAnswering, TapasForSequenceClassification, TapasModel,
    cell_positions,
)

SIZES = (3, 6, 6, 2, 6, 6, 10)
SMALL = dict(vocab_size=40, d_model=16, n_layers=1, n_heads=2, d_ff=24, max_position_embeddings=32,
             type_vocab_sizes=SIZES, dropout=0.0)


def _types(b=2, n=14, seed=0):
    """Random table token types: a 4-token question, then cells of random (column, row)."""
    g = torch.Generator().manual_seed(seed)
    types = torch.stack([torch.randint(0, s, (b, n), generator=g) for s in SIZES], dim=-1)
    types[:, :4, 1:3] = 0
    return types


def test_config_json_round_trip_with_hf_names():
    config = TapasConfig(**SMALL, num_aggregation_labels=4, aggregation_labels={0: "NONE", 1: "SUM", 2: "AVERAGE",
                                                                                3: "COUNT"},
                         use_answer_as_supervision=True, huber_loss_delta=0.5, answer_loss_cutoff=0.6,
                         cell_selection_preference=0.2, select_one_column=False, attention="bigbird")
    hf = json.loads(json.dumps(config.to_hf("TapasForQuestionAnswering")))
    assert hf["type_vocab_sizes"] == list(SIZES) and hf["num_aggregation_labels"] == 4
    assert hf["aggregation_labels"] == {"0": "NONE", "1": "SUM", "2": "AVERAGE", "3": "COUNT"}
    assert hf["hidden_size"] == 16 and hf["model_type"] == "tapas" and "type_vocab_size" not in hf
    assert hf["polyformer"]["attention"]["name"] == "bigbird"
    assert TapasConfig.from_hf(hf) == config
    defaults = TapasConfig.from_hf({"model_type": "tapas"})
    assert defaults.max_position_embeddings == 1024 and defaults.select_one_column and defaults.type_vocab_size == 3
    assert not defaults.weakly_supervised and config.weakly_supervised


def test_embeddings_sum_seven_tables_with_per_cell_positions():
    emb = TapasEmbeddings(TapasConfig(**SMALL)).eval()
    ids, types = torch.randint(0, 40, (2, 14)), _types()
    positions = cell_positions(types, SIZES[2], 32)
    by_hand = emb.word_embeddings.weight[ids] + emb.position_embeddings.weight[positions]
    by_hand = by_hand + emb.token_type_embeddings.weight[types[..., 0]]
    for k, table in enumerate(emb.table_embeddings):
        by_hand = by_hand + table.weight[types[..., k + 1]]
    expected = F.layer_norm(by_hand, (16,), emb.norm.weight, emb.norm.bias, 1e-12)
    torch.testing.assert_close(emb(ids, types), expected)
    absolute = TapasEmbeddings(TapasConfig(**SMALL, reset_position_index_per_cell=False)).eval()
    absolute.load_state_dict(emb.state_dict())
    torch.testing.assert_close(absolute(ids, types, position_ids=positions), expected)


def test_cell_positions_against_a_loop():
    types = _types(b=3, n=40, seed=2)
    got = cell_positions(types, SIZES[2], max_positions=12)
    for b in range(3):
        for i in range(40):
            cell = (types[b, i, 1].item(), types[b, i, 2].item())
            first = next(j for j in range(40) if (types[b, j, 1].item(), types[b, j, 2].item()) == cell)
            assert got[b, i].item() == min(i - first, 11)


def test_question_answering_head_initialisation_and_shapes():
    torch.manual_seed(0)
    zero = TapasForQuestionAnswering(TapasConfig(**SMALL, init_cell_selection_weights_to_zero=True))
    assert not zero.output_weights.any() and not zero.column_output_weights.any()
    assert zero.aggregation_classifier is None
    model = TapasForQuestionAnswering(TapasConfig(**{**SMALL, "d_model": 64}, initializer_range=0.1,
                                                  num_aggregation_labels=3))
    assert abs(model.output_weights.std().item() - 0.1) < 0.03 and model.output_bias.item() == 0
    out = model.eval()(input_ids=torch.randint(0, 40, (2, 14)), token_type_ids=_types())
    assert out.logits.shape == (2, 14) and out.logits_aggregation.shape == (2, 3) and out.loss is None
    # question tokens (column 0) are never selected with select_one_column
    assert (out.logits[:, :4] < -1000).all()
    plain = TapasForQuestionAnswering(TapasConfig(**SMALL, select_one_column=False)).eval()
    h = plain.tapas(input_ids=torch.ones(1, 5, dtype=torch.long)).last_hidden_state
    expected = h @ plain.output_weights + plain.output_bias  # token logits (temperature 1)
    torch.testing.assert_close(plain(input_ids=torch.ones(1, 5, dtype=torch.long)).logits, expected)


def test_folder_round_trip_and_attention_override(tmp_path):
    model = TapasForQuestionAnswering(TapasConfig(**SMALL, num_aggregation_labels=4)).eval()
    model.save_pretrained(tmp_path)
    again = polyformer.from_pretrained(tmp_path, attention="memory_efficient")
    assert isinstance(again, TapasForQuestionAnswering)
    assert again.tapas.encoder.layers[0].attn.mechanism.name == "memory_efficient"
    inputs = dict(input_ids=torch.randint(0, 40, (2, 14)), token_type_ids=_types())
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs).logits, model(**inputs).logits, atol=1e-5, rtol=1e-5)
    # the bare encoder reads the same folder's backbone
    state, _ = load_state_dict(tmp_path)
    save_state_dict({k: v for k, v in state.items() if k.startswith("tapas.")}, tmp_path / "model.safetensors")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["TapasModel"]}))
    assert isinstance(polyformer.from_pretrained(tmp_path), TapasModel)


def test_missing_and_unexpected_weights_are_named(tmp_path):
    TapasForSequenceClassification(TapasConfig(**SMALL, num_labels=2)).save_pretrained(tmp_path)
    state, _ = load_state_dict(tmp_path)
    state.pop("tapas.embeddings.token_type_embeddings_4.weight")
    state["tapas.embeddings.token_type_embeddings_7.weight"] = torch.zeros(3, 16)
    save_state_dict(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="token_type_embeddings_7") as error:
        polyformer.from_pretrained(tmp_path)
    assert "table_embeddings.3" in str(error.value)


@pytest.mark.parametrize("change,match", [
    (dict(num_aggregation_labels=1), "at least 2"),
    (dict(type_vocab_sizes=(3, 5)), "type_vocab_sizes"),
    (dict(type_vocab_sizes=(3, 0, 5, 2)), "type_vocab_sizes"),
    (dict(average_approximation_function="median"), "ratio"),
    (dict(temperature=0.0), "temperature"),
    (dict(max_num_rows=0), "max_num_rows"),
])
def test_bad_configs_are_refused(tmp_path, change, match):
    with pytest.raises(ConfigError, match=match):
        TapasConfig(**{**SMALL, **change})
    hf = TapasConfig(**SMALL).to_hf("TapasModel")
    hf.update({k: list(v) if isinstance(v, tuple) else v for k, v in change.items()})
    tmp_path.joinpath("config.json").write_text(json.dumps(hf))
    with pytest.raises(CheckpointError, match="config.json"):
        polyformer.from_pretrained(tmp_path)


def test_bad_token_types_raise_named_errors():
    model = TapasForQuestionAnswering(TapasConfig(**SMALL)).eval()
    ids, types = torch.randint(0, 40, (2, 14)), _types()
    with pytest.raises(ShapeError, match=r"\(batch, length, 7\).*TAPAS tokenizer"):
        model(input_ids=ids, token_type_ids=types[..., 0])  # BERT's segment ids
    with pytest.raises(ShapeError, match=r"\(batch, length, 7\)"):
        model(input_ids=ids, token_type_ids=types[..., :6])
    rows = types.clone()
    rows[0, 9, 2] = 6
    with pytest.raises(ShapeError, match=r"\[\.\.\., 2\] \(row\).*type_vocab_sizes\[2\]=6.*drop rows"):
        model(input_ids=ids, token_type_ids=rows)
    relation = types.clone()
    relation[1, 5, 6] = -1
    with pytest.raises(ShapeError, match="numeric relation"):
        model(input_ids=ids, token_type_ids=relation)
    with pytest.raises(ShapeError, match="integers"):
        model(input_ids=ids, token_type_ids=types.float())
    with pytest.raises(ShapeError, match="exactly one of input_ids"):
        model(token_type_ids=types)
    with pytest.raises(ShapeError, match="max_position_embeddings"):
        TapasModel(TapasConfig(**SMALL, reset_position_index_per_cell=False))(input_ids=torch.ones(1, 40).long())


def test_missing_supervision_raises_named_errors():
    weak = TapasForQuestionAnswering(TapasConfig(**SMALL, num_aggregation_labels=4, use_answer_as_supervision=True,
                                                 cell_selection_preference=0.2, huber_loss_delta=1.0)).eval()
    ids, types = torch.randint(0, 40, (2, 14)), _types()
    labels = torch.zeros(2, 14, dtype=torch.long)
    labels[0, 6] = 1
    answer = torch.tensor([math.nan, 3.0])
    with pytest.raises(PolyformerError, match="float_answer.*use_answer_as_supervision"):
        weak(input_ids=ids, token_type_ids=types, labels=labels)
    with pytest.raises(PolyformerError, match="numeric_values.*TAPAS tokenizer"):
        weak(input_ids=ids, token_type_ids=types, labels=labels, float_answer=answer)
    values = torch.full((2, 14), math.nan)
    with pytest.raises(PolyformerError, match="numeric_values_scale"):
        weak(input_ids=ids, token_type_ids=types, labels=labels, float_answer=answer, numeric_values=values)
    loss = weak(input_ids=ids, token_type_ids=types, labels=labels, float_answer=answer, numeric_values=values,
                numeric_values_scale=torch.ones(2, 14)).loss
    assert torch.isfinite(loss)
    strong = TapasForQuestionAnswering(TapasConfig(**SMALL, num_aggregation_labels=4)).eval()
    with pytest.raises(PolyformerError, match="aggregation_labels"):
        strong(input_ids=ids, token_type_ids=types, labels=labels)


def test_module_example_runs():
    import doctest

    from polyformer.models import tapas

    result = doctest.testmod(tapas)
    assert result.attempted > 0 and result.failed == 0
