"""TAPAS' segmented reductions and losses against transformers' own helpers and model.

Every function in polyformer.models.tapas_segments / tapas_losses is compared with its counterpart
in transformers.models.tapas.modeling_tapas on random tensors (fixed seeds), and the assembled
question_answering_loss with TapasForQuestionAnswering's loss on a tiny random model, in the
strong (WikiSQL-like), weak (WTQ-like) and cell-selection-only (SQA-like) settings.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

hf = pytest.importorskip("transformers.models.tapas.modeling_tapas")
from transformers import TapasConfig, TapasForQuestionAnswering  # noqa: E402

from polyformer.errors import ConfigError, DataError, ShapeError  # noqa: E402
from polyformer.models import tapas_losses as L  # noqa: E402
from polyformer.models import tapas_segments as S  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)
B, LEN, ROWS, COLS = 3, 48, 64, 32


def _table(seed: int = 0, batch: int = B, length: int = LEN):
    """Token types of a batch of small tables: question tokens, a header row, body cells, padding."""
    g = torch.Generator().manual_seed(seed)
    token_type_ids = torch.zeros(batch, length, 7, dtype=torch.long)
    attention = torch.ones(batch, length)
    for b in range(batch):
        n_rows, n_cols = 2 + b, 3 + (b % 2)
        used = length - 4 * b  # later examples are padded
        cells = torch.randint(0, (n_rows + 1) * n_cols, (used - 6,), generator=g).sort().values
        token_type_ids[b, 6:used, 0] = 1
        token_type_ids[b, 6:used, 1] = cells % n_cols + 1
        token_type_ids[b, 6:used, 2] = cells // n_cols
        attention[b, used:] = 0
    return token_type_ids, attention


def _labels(token_type_ids: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Answer tokens: some body cells of one column in example 0, two columns in 1, none in 2."""
    columns, rows = token_type_ids[..., 1], token_type_ids[..., 2]
    labels = torch.zeros_like(rows)
    labels[0] = ((columns[0] == 2) & (rows[0] >= 1) & (rows[0] <= 2)).long()
    labels[1] = (((columns[1] == 1) | (columns[1] == 3)) & (rows[1] == 1)).long()
    return labels


def _hf_index(token_type_ids):
    rows = hf.IndexMap(token_type_ids[..., 2].clamp(max=ROWS - 1), ROWS, batch_dims=1)
    cols = hf.IndexMap(token_type_ids[..., 1].clamp(max=COLS - 1), COLS, batch_dims=1)
    return rows, cols, hf.ProductIndexMap(rows, cols)


# ------------------------------------------------------------------------------------------------
# Segments
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min"])
def test_reductions_match_transformers(name):
    torch.manual_seed(0)
    ids = torch.randint(0, 7, (4, 30))
    values = torch.randn(4, 30)
    ours, our_range = getattr(S, name)(values, S.IndexMap(ids, 9, batch_dims=1))
    ref, ref_range = getattr(hf, name)(values, hf.IndexMap(ids, 9, batch_dims=1))
    torch.testing.assert_close(ours, ref, **TOL)
    assert torch.equal(our_range.indices, ref_range.indices)
    assert ours[:, 7:].abs().sum() == 0  # empty segments give zero


def test_reductions_of_vectors_match_a_loop_and_keep_integer_dtype():
    torch.manual_seed(1)
    ids = torch.randint(0, 5, (2, 11))
    values = torch.randn(2, 11, 3)
    index = S.IndexMap(ids, 6, batch_dims=1)
    sums, _ = S.reduce_sum(values, index)
    maxes, _ = S.reduce_max(values, index)
    for b in range(2):
        for s in range(6):
            chosen = values[b][ids[b] == s]
            torch.testing.assert_close(sums[b, s], chosen.sum(0) if len(chosen) else torch.zeros(3))
            torch.testing.assert_close(maxes[b, s], chosen.max(0).values if len(chosen) else torch.zeros(3))
    labels, _ = S.reduce_max(torch.randint(0, 2, (2, 11)), index)
    assert labels.dtype == torch.long


def test_gather_flatten_range_and_projections_match_transformers():
    torch.manual_seed(2)
    rows, cols = torch.randint(0, 5, (3, 20)), torch.randint(0, 4, (3, 20))
    ours = S.ProductIndexMap(S.IndexMap(rows, 5, 1), S.IndexMap(cols, 4, 1))
    ref = hf.ProductIndexMap(hf.IndexMap(rows, 5, 1), hf.IndexMap(cols, 4, 1))
    assert torch.equal(ours.indices, ref.indices) and ours.num_segments == ref.num_segments == 20
    assert torch.equal(S.flatten(ours).indices, hf.flatten(ref).indices)
    assert torch.equal(S.range_index_map((3,), 20).indices, hf.range_index_map(torch.Size([3]), 20).indices)
    assert torch.equal(ours.project_outer(ours).indices, ref.project_outer(ref).indices)
    assert torch.equal(ours.project_inner(ours).indices, ref.project_inner(ref).indices)
    per_cell = torch.randn(3, 20)
    torch.testing.assert_close(S.gather(per_cell, ours), hf.gather(per_cell, ref))
    vectors = torch.randn(3, 20, 2)
    torch.testing.assert_close(S.gather(vectors, ours), hf.gather(vectors, ref))


def test_table_index_masks_match_transformers():
    token_type_ids, attention = _table()
    table = S.TableIndex.from_token_type_ids(token_type_ids, attention, ROWS, COLS)
    _, _, cell = _hf_index(token_type_ids)
    torch.testing.assert_close(table.cell_mask, hf.reduce_mean(attention, cell)[0])
    assert torch.equal(table.cell_index.indices, cell.indices)
    assert torch.equal(table.table_mask, (token_type_ids[..., 2] > 0).float())


def test_segment_shape_errors():
    index = S.IndexMap(torch.zeros(2, 5, dtype=torch.long), 3, batch_dims=1)
    with pytest.raises(ShapeError, match="must start with the index map's shape"):
        S.reduce_sum(torch.zeros(2, 4), index)
    with pytest.raises(ShapeError, match="num_segments 3"):
        S.gather(torch.zeros(2, 4), index)
    with pytest.raises(ShapeError, match="integer tensor"):
        S.IndexMap(torch.zeros(2, 5), 3)
    with pytest.raises(ShapeError, match="same batch_dims"):
        S.ProductIndexMap(index, S.IndexMap(torch.zeros(2, 5, dtype=torch.long), 3, batch_dims=0))
    with pytest.raises(ShapeError, match="token_type_ids must be"):
        S.TableIndex.from_token_type_ids(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ShapeError, match="attention_mask"):
        S.TableIndex.from_token_type_ids(torch.zeros(2, 5, 7, dtype=torch.long), torch.ones(2, 4))


# ------------------------------------------------------------------------------------------------
# Cell selection
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("allow_empty", [False, True])
def test_column_logits_and_single_column_loss_match_transformers(allow_empty):
    torch.manual_seed(3)
    token_type_ids, attention = _table()
    table = S.TableIndex.from_token_type_ids(token_type_ids, attention, ROWS, COLS)
    _, hf_cols, hf_cell = _hf_index(token_type_ids)
    hidden, weight, bias = torch.randn(B, LEN, 8), torch.randn(8), torch.randn(())
    ours = L.compute_column_logits(hidden, weight, bias, table.cell_index, table.cell_mask, allow_empty)
    ref = hf.compute_column_logits(hidden, weight, bias, hf_cell, table.cell_mask, allow_empty)
    torch.testing.assert_close(ours, ref, **TOL)

    token_logits, labels = torch.randn(B, LEN) * 3, _labels(token_type_ids)
    loss, logits = L.single_column_cell_selection_loss(token_logits, ours, labels, table.cell_index,
                                                       table.column_index, table.cell_mask)
    ref_loss, ref_logits = hf._single_column_cell_selection_loss(token_logits, ref, labels, hf_cell, hf_cols,
                                                                 table.cell_mask)
    torch.testing.assert_close(loss, ref_loss, **TOL)
    torch.testing.assert_close(logits, ref_logits, **TOL)
    assert (loss > 0).all()


def test_single_column_logits_keep_only_the_best_column():
    torch.manual_seed(4)
    token_type_ids, attention = _table()
    table = S.TableIndex.from_token_type_ids(token_type_ids, attention, ROWS, COLS)
    column_logits = torch.full((B, COLS), -5.0)
    column_logits[:, 2] = 5.0
    logits = L.single_column_logits(torch.randn(B, LEN), column_logits, table.cell_index, table.cell_mask)
    kept = logits > CUT
    assert torch.equal(kept, (token_type_ids[..., 1] == 2) & (attention > 0))


CUT = L.CLOSE_ENOUGH_TO_LOG_ZERO / 2


# ------------------------------------------------------------------------------------------------
# Aggregation and the answer loss
# ------------------------------------------------------------------------------------------------
def _aggregation_inputs(seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    logits_aggregation = torch.randn(6, 4, generator=g) * 2
    answer = torch.tensor([3.0, float("nan"), 12.5, 0.5, float("nan"), 7.0])
    labels = torch.zeros(6, LEN, dtype=torch.long)
    labels[[0, 1, 3], 10] = 1
    return logits_aggregation, answer, labels


def test_aggregate_mask_matches_transformers_on_both_branches():
    logits_aggregation, answer, labels = _aggregation_inputs()
    mass = logits_aggregation.softmax(-1)[:, 1:].sum(-1)
    preference = float(mass.median())
    head = nn.Linear(4, 4)
    with torch.no_grad():  # transformers recomputes the logits from a head: make it the identity
        head.weight.copy_(torch.eye(4))
        head.bias.zero_()
    ours = L.aggregate_mask(answer, logits_aggregation, preference, labels)
    ref = hf._calculate_aggregate_mask(answer, logits_aggregation, preference, labels, head)
    torch.testing.assert_close(ours, ref)
    assert 0 < ours.sum() < (~answer.isnan()).sum()  # some numeric answers become cell selection


@pytest.mark.parametrize("use_answer", [False, True])
def test_aggregation_loss_matches_transformers(use_answer):
    logits_aggregation, answer, labels = _aggregation_inputs()
    mask = L.aggregate_mask(answer, logits_aggregation, 0.5, labels)
    aggregation_labels = torch.tensor([0, 1, 2, 3, 0, 2])
    ours = L.aggregation_loss(logits_aggregation, mask, aggregation_labels, use_answer, 4, 0.7)
    ref = hf._calculate_aggregation_loss(logits_aggregation, mask, aggregation_labels, use_answer, 4, 0.7)
    torch.testing.assert_close(ours, ref, **TOL)


def _answer_inputs(seed: int = 6):
    g = torch.Generator().manual_seed(seed)
    token_type_ids, attention = _table(seed)
    table_mask = (token_type_ids[..., 2] > 0).float()
    numeric = torch.where(torch.rand(B, LEN, generator=g) < 0.7, torch.randn(B, LEN, generator=g) * 10,
                          torch.full((B, LEN), float("nan")))
    scale = torch.randint(1, 3, (B, LEN), generator=g).float()
    token_logits = torch.randn(B, LEN, generator=g) * 2
    logits_aggregation = torch.randn(B, 4, generator=g)
    return token_logits, numeric, scale, table_mask, logits_aggregation


def _hf_config(**overrides) -> TapasConfig:
    return TapasConfig(**{"num_aggregation_labels": 4, "use_answer_as_supervision": True, "huber_loss_delta": 0.5,
                          "temperature": 0.7, "aggregation_temperature": 1.3, **overrides})


@pytest.mark.parametrize("approximation", ["ratio", "first_order", "second_order"])
@pytest.mark.parametrize("gumbel", [(False, False), (True, False), (False, True), (True, True)])
def test_expected_result_matches_transformers(approximation, gumbel):
    token_logits, numeric, scale, table_mask, logits_aggregation = _answer_inputs()
    config = _hf_config(average_approximation_function=approximation, use_gumbel_for_cells=gumbel[0],
                        use_gumbel_for_aggregation=gumbel[1])
    torch.manual_seed(11)
    ref = hf._calculate_expected_result(torch.distributions.Bernoulli(logits=token_logits), numeric, scale,
                                        table_mask, logits_aggregation, config)
    torch.manual_seed(11)  # the same draws as transformers when sampling
    ours = L.expected_result(token_logits, numeric, scale, table_mask, logits_aggregation,
                             L.TapasLossOptions.from_config(config))
    torch.testing.assert_close(ours, ref, **TOL)


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("cutoff", [None, "median"])
def test_regression_loss_and_cutoff_match_transformers(normalized, cutoff):
    token_logits, numeric, scale, table_mask, logits_aggregation = _answer_inputs()
    answer = torch.tensor([40.0, float("nan"), -3.0])
    mask = torch.tensor([1.0, 0.0, 1.0])
    config = _hf_config(use_normalized_answer_loss=normalized, answer_loss_importance=0.9)
    if cutoff:
        plain, _ = L.regression_loss(answer, mask, token_logits, numeric, scale, table_mask, logits_aggregation,
                                     L.TapasLossOptions.from_config(config))
        config.answer_loss_cutoff = float((plain[0] + plain[2]) / 2 / 0.9)  # between the two losses
    ours = L.regression_loss(answer, mask, token_logits, numeric, scale, table_mask, logits_aggregation,
                             L.TapasLossOptions.from_config(config))
    ref = hf._calculate_regression_loss(answer, mask, torch.distributions.Bernoulli(logits=token_logits), numeric,
                                        scale, table_mask, logits_aggregation, config)
    torch.testing.assert_close(ours[0], ref[0], **TOL)
    torch.testing.assert_close(ours[1], ref[1])
    if cutoff:
        assert ours[1][[0, 2]].sum() == 1  # one example kept, one cut off


def test_gumbel_cells_keep_their_gradient():
    token_logits, numeric, scale, table_mask, logits_aggregation = _answer_inputs()
    token_logits.requires_grad_(True)
    options = L.TapasLossOptions(num_aggregation_labels=4, use_gumbel_for_cells=True)
    L.expected_result(token_logits, numeric, scale, table_mask, logits_aggregation, options,
                      generator=torch.Generator().manual_seed(0)).sum().backward()
    assert token_logits.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------
# The assembled loss against TapasForQuestionAnswering
# ------------------------------------------------------------------------------------------------
WTQ = dict(num_aggregation_labels=4, use_answer_as_supervision=True, cell_selection_preference=0.75,
           huber_loss_delta=0.1218, answer_loss_cutoff=0.664694, temperature=0.0352513,
           select_one_column=True, allow_empty_column_selection=False)
SETTINGS = {
    "strong_single_column": dict(num_aggregation_labels=4, use_answer_as_supervision=False),
    "strong_tokens_cell_average": dict(num_aggregation_labels=4, use_answer_as_supervision=False,
                                       select_one_column=False, average_logits_per_cell=True,
                                       aggregation_loss_weight=0.5),
    "sqa_single_column_allow_empty": dict(num_aggregation_labels=0, allow_empty_column_selection=True),
    "sqa_tokens": dict(num_aggregation_labels=0, select_one_column=False, positive_label_weight=3.0),
    "sqa_single_column": dict(num_aggregation_labels=0),
    "wtq_ratio": WTQ,
    "wtq_ratio_answer_cut_off": {**WTQ, "answer_loss_cutoff": 0.1},
    "wtq_first_order_no_cutoff": {**WTQ, "average_approximation_function": "first_order",
                                  "answer_loss_cutoff": None},
    "wtq_second_order_normalized": {**WTQ, "average_approximation_function": "second_order",
                                    "use_normalized_answer_loss": True},
    "wtq_tokens_no_per_token_loss": {**WTQ, "select_one_column": False, "disable_per_token_loss": True,
                                     "cell_selection_preference": 0.5},
    "wtq_gumbel": {**WTQ, "use_gumbel_for_cells": True, "use_gumbel_for_aggregation": True,
                   "answer_loss_cutoff": 50.0},
}


def _model_inputs(config: TapasConfig):
    g = torch.Generator().manual_seed(7)
    token_type_ids, attention = _table()
    labels = _labels(token_type_ids)
    if config.select_one_column and not config.allow_empty_column_selection and not config.use_answer_as_supervision:
        # an unlabelled example's gold column is 0, which then has a log-zero logit: a loss of
        # thousands would swamp the comparison, so every example gets an answer cell here
        labels[2] = ((token_type_ids[2, :, 1] == 1) & (token_type_ids[2, :, 2] == 1)).long()
    input_ids = torch.randint(1, config.vocab_size, (B, LEN), generator=g) * attention.long()
    table_mask = token_type_ids[..., 2] > 0
    numeric = torch.where(table_mask & (torch.rand(B, LEN, generator=g) < 0.8),
                          torch.randn(B, LEN, generator=g) * 5, torch.full((B, LEN), float("nan")))
    return dict(input_ids=input_ids, attention_mask=attention, token_type_ids=token_type_ids,
                labels=labels, aggregation_labels=torch.tensor([1, 0, 3]),
                float_answer=torch.tensor([4.0, float("nan"), 2.0]), numeric_values=numeric,
                numeric_values_scale=torch.randint(1, 3, (B, LEN), generator=g).float())


def _tiny_model(**settings) -> TapasForQuestionAnswering:
    torch.manual_seed(0)
    config = TapasConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64, **settings)
    model = TapasForQuestionAnswering(config).eval()
    with torch.no_grad():  # the default init leaves the cell heads at zero: give them random values
        for p in (model.output_weights, model.column_output_weights):
            p.normal_(0, 0.5)
    return model


def _our_loss(model: TapasForQuestionAnswering, inputs: dict, with_labels: bool = True):
    config = model.config
    options = L.TapasLossOptions.from_config(config)
    encoded = model.tapas(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                          token_type_ids=inputs["token_type_ids"])
    hidden, pooled = encoded[0], encoded[1]
    table = S.TableIndex.from_token_type_ids(inputs["token_type_ids"], inputs["attention_mask"],
                                             config.max_num_rows, config.max_num_columns)
    token_logits = (hidden @ model.output_weights + model.output_bias) / config.temperature
    column_logits = L.compute_column_logits(hidden, model.column_output_weights, model.column_output_bias,
                                            table.cell_index, table.cell_mask,
                                            config.allow_empty_column_selection) if config.select_one_column else None
    logits_aggregation = model.aggregation_classifier(pooled) if config.num_aggregation_labels else None
    if not with_labels:
        return L.question_answering_logits(token_logits, column_logits, table, options)
    return L.question_answering_loss(token_logits, column_logits, logits_aggregation, table, inputs["labels"],
                                     options, aggregation_labels=inputs["aggregation_labels"],
                                     float_answer=inputs["float_answer"], numeric_values=inputs["numeric_values"],
                                     numeric_values_scale=inputs["numeric_values_scale"])


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_question_answering_loss_matches_transformers(setting):
    model = _tiny_model(**SETTINGS[setting])
    inputs = _model_inputs(model.config)
    with torch.no_grad():
        torch.manual_seed(21)  # gumbel draws: the encoder draws nothing in eval mode
        # transformers' token-level loss fails on the integer labels its tokenizer returns
        # (binary_cross_entropy_with_logits cannot write a float into a long target): give it floats
        ref = model(**{**inputs, "labels": inputs["labels"].float()})
        torch.manual_seed(21)
        ours = _our_loss(model, inputs)
    torch.testing.assert_close(ours.loss, torch.as_tensor(ref.loss), **TOL)
    torch.testing.assert_close(ours.logits, ref.logits, **TOL)
    assert 0 < ours.loss < 100


@pytest.mark.parametrize("setting", ["strong_single_column", "sqa_single_column_allow_empty"])
def test_logits_without_labels_match_transformers(setting):
    model = _tiny_model(**SETTINGS[setting])
    inputs = {k: v for k, v in _model_inputs(model.config).items()
              if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        torch.testing.assert_close(_our_loss(model, inputs, with_labels=False), model(**inputs).logits, **TOL)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------
def _loss_args(**options):
    token_type_ids, attention = _table()
    table = S.TableIndex.from_token_type_ids(token_type_ids, attention)
    torch.manual_seed(8)
    return dict(token_logits=torch.randn(B, LEN), column_logits=torch.randn(B, COLS),
                logits_aggregation=torch.randn(B, 4), table=table, labels=_labels(token_type_ids),
                options=L.TapasLossOptions(**options))


WEAK = dict(num_aggregation_labels=4, use_answer_as_supervision=True, cell_selection_preference=0.5,
            huber_loss_delta=0.1)


@pytest.mark.parametrize("options, extra, error, message", [
    (dict(num_aggregation_labels=4), {}, ConfigError, "aggregation_labels is needed"),
    (dict(num_aggregation_labels=4), {"aggregation_labels": torch.zeros(B + 1, dtype=torch.long)}, ShapeError,
     r"aggregation_labels must have shape \(3,\)"),
    (dict(num_aggregation_labels=4), {"aggregation_labels": torch.tensor([0, 4, 1])}, DataError,
     r"must lie in \[0, 4\)"),
    (WEAK, {}, ConfigError, "float_answer is needed"),
    (WEAK, {"float_answer": torch.ones(B)}, ConfigError, "numeric_values is needed"),
    (WEAK, {"float_answer": torch.ones(B), "numeric_values": torch.ones(B, LEN)}, ConfigError,
     "numeric_values_scale is needed"),
    ({**WEAK, "cell_selection_preference": None}, {"float_answer": torch.ones(B)}, ConfigError,
     "needs cell_selection_preference"),
    ({**WEAK, "huber_loss_delta": None}, {"float_answer": torch.ones(B), "numeric_values": torch.ones(B, LEN),
                                           "numeric_values_scale": torch.ones(B, LEN)}, ConfigError,
     "needs huber_loss_delta"),
    ({**WEAK, "num_aggregation_labels": 3}, {"logits_aggregation": torch.randn(B, 3), "float_answer": torch.ones(B),
                                              "numeric_values": torch.ones(B, LEN),
                                              "numeric_values_scale": torch.ones(B, LEN)},
     ConfigError, "needs 4 aggregation labels"),
    (dict(), {"column_logits": None}, ConfigError, "select_one_column needs column_logits"),
    (dict(), {"labels": torch.zeros(B, LEN - 1, dtype=torch.long)}, ShapeError, "labels must have shape"),
    (dict(num_aggregation_labels=4), {"logits_aggregation": None}, ConfigError, "logits_aggregation is needed"),
    (dict(), {"token_logits": torch.randn(B, LEN + 2), "labels": torch.zeros(B, LEN + 2, dtype=torch.long)},
     ShapeError, "the table index covers"),
])
def test_bad_input_raises_named_errors(options, extra, error, message):
    args = {**_loss_args(**options), **extra}
    with pytest.raises(error, match=message):
        L.question_answering_loss(**args)


def test_options_validate_and_read_transformers_config():
    with pytest.raises(ConfigError, match="average_approximation_function"):
        L.TapasLossOptions(average_approximation_function="median")
    with pytest.raises(ConfigError, match="temperature must be positive"):
        L.TapasLossOptions(temperature=0.0)
    config = TapasConfig(num_aggregation_labels=4, use_answer_as_supervision=True, huber_loss_delta=0.25,
                         average_approximation_function=hf.AverageApproximationFunction.SECOND_ORDER)
    options = L.TapasLossOptions.from_config(config)
    assert options.weakly_supervised and options.huber_loss_delta == 0.25
    assert options.average_approximation_function == "second_order"
    assert not L.TapasLossOptions.from_config(TapasConfig()).weakly_supervised


def test_total_loss_backpropagates_to_every_head_and_plain_logits_pass_through():
    args = _loss_args(**WEAK)
    for name in ("token_logits", "column_logits", "logits_aggregation"):
        args[name].requires_grad_(True)
    token_type_ids, _ = _table()
    numeric = torch.where(token_type_ids[..., 2] > 0, torch.full((B, LEN), 3.0), torch.full((B, LEN), float("nan")))
    out = L.question_answering_loss(**args, float_answer=torch.tensor([9.0, float("nan"), 2.0]),
                                    numeric_values=numeric, numeric_values_scale=torch.ones(B, LEN))
    out.loss.backward()
    for name in ("token_logits", "column_logits", "logits_aggregation"):
        assert args[name].grad.abs().sum() > 0, name
    plain = L.TapasLossOptions(select_one_column=False)
    assert L.question_answering_logits(args["token_logits"], None, args["table"], plain) is args["token_logits"]
