"""TAPAS checkpoints <-> polyformer: the literal key map of ``TapasModel`` and its task heads.

TAPAS is BERT with one token-type table per kind of table coordinate; the encoder and pooler keys
are BERT's (see :mod:`polyformer.models.bert_convert`). Only the embeddings and heads differ::

    tapas.embeddings.token_type_embeddings_0.weight   tapas.embeddings.token_type_embeddings.weight  (segment)
    tapas.embeddings.token_type_embeddings_1.weight   tapas.embeddings.table_embeddings.0.weight     (column)
    ...
    tapas.embeddings.token_type_embeddings_6.weight   tapas.embeddings.table_embeddings.5.weight     (numeric relation)
    output_weights / output_bias                      output_weights / output_bias                   (cells)
    column_output_weights / column_output_bias        column_output_weights / column_output_bias     (columns)
    aggregation_classifier.weight / .bias             aggregation_classifier.weight / .bias
"""

from __future__ import annotations

from polyformer.convert.keymap import KeyMap, Rule

# BERT's encoder and pooler rules are TAPAS's too (one list, not a copy).
from polyformer.models.bert_convert import _BACKBONE as _BERT_BACKBONE
from polyformer.models.bert_convert import _BUFFERS, _POOLER

__all__ = ["HEADS", "tapas_key_map"]

_WB = ("weight", "bias")

# Heads sit outside the base model: never prefixed.
HEADS: dict[str, list[tuple[str, str]]] = {
    "none": [],
    "classifier": [(f"classifier.{s}", f"classifier.{s}") for s in _WB],
    "cells": [(name, name) for name in
              ("output_weights", "output_bias", "column_output_weights", "column_output_bias")],
}
_AGGREGATION = [(f"aggregation_classifier.{s}", f"aggregation_classifier.{s}") for s in _WB]


def tapas_key_map(head: str, *, n_token_types: int, pooler: bool = True, aggregation: bool = False,
                  prefix: str = "tapas.") -> KeyMap:
    """The map of a TAPAS model with ``head`` (a key of :data:`HEADS`).

    ``n_token_types``: the length of ``type_vocab_sizes`` (one embedding table each; the first is
    the segment table BERT has). ``pooler``: the base model has ``pooler.dense``.
    ``aggregation``: the question-answering head has its aggregation classifier
    (``num_aggregation_labels > 0``). ``prefix``: our name of the base model ("" for ``TapasModel``).
    """
    backbone = [(hf, ours) for hf, ours in _BERT_BACKBONE if "token_type_embeddings" not in hf]
    backbone.append(("embeddings.token_type_embeddings_0.weight", "embeddings.token_type_embeddings.weight"))
    backbone += [(f"embeddings.token_type_embeddings_{i}.weight", f"embeddings.table_embeddings.{i - 1}.weight")
                 for i in range(1, n_token_types)]
    backbone += _POOLER if pooler else []
    heads = HEADS[head] + (_AGGREGATION if aggregation else [])
    rules = [Rule(hf, prefix + ours) for hf, ours in backbone]
    rules += [Rule(hf, ours, prefixed=False) for hf, ours in heads]
    ignore = list(_BUFFERS) + ([] if pooler else [hf for hf, _ in _POOLER])
    return KeyMap(rules, ignore=tuple(ignore), hf_prefixes=("tapas.", ""))
