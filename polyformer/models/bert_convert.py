"""BERT checkpoints <-> polyformer: the literal key map of ``BertModel`` and its task heads.

On disk (every transformers version so far, and transformers 5's live module names too)::

    bert.embeddings.word_embeddings.weight               bert.embeddings.word_embeddings.weight
    bert.encoder.layer.0.attention.self.query.weight     bert.encoder.layers.0.attn.q_proj.weight
    bert.encoder.layer.0.attention.output.LayerNorm.*    bert.encoder.layers.0.attn_norm.*
    bert.encoder.layer.0.output.LayerNorm.*              bert.encoder.layers.0.mlp_norm.*
    cls.predictions.transform.dense.weight               cls.transform.dense.weight

Checkpoints of the bare ``BertModel`` (sentence-transformers' MiniLM, for one) carry no ``bert.``
prefix; the map reads both spellings and the task models save with the prefix, as Hugging Face does.
"""

from __future__ import annotations

from polyformer.convert.keymap import KeyMap, Rule

__all__ = ["HEADS", "bert_key_map"]

_WB = ("weight", "bias")
L = "encoder.layers.{}"  # our block prefix

# (Hugging Face name, our name) of every weight below the ``bert.`` prefix
_BACKBONE = [
    ("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"),
    ("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight"),
    ("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.weight"),
    *[(f"embeddings.LayerNorm.{s}", f"embeddings.norm.{s}") for s in _WB],
    *[(f"encoder.layer.{{}}.{theirs}.{s}", f"{L}.{ours}.{s}") for theirs, ours in [
        ("attention.self.query", "attn.q_proj"),
        ("attention.self.key", "attn.k_proj"),
        ("attention.self.value", "attn.v_proj"),
        ("attention.output.dense", "attn.out_proj"),
        ("attention.output.LayerNorm", "attn_norm"),  # post-norm: after the attention residual
        ("intermediate.dense", "mlp.fc_in"),
        ("output.dense", "mlp.fc_out"),
        ("output.LayerNorm", "mlp_norm"),
    ] for s in _WB],
]
_POOLER = [(f"pooler.dense.{s}", f"pooler.dense.{s}") for s in _WB]

# Head weights sit outside the base model: never prefixed.
HEADS: dict[str, list[tuple[str, str]]] = {
    "none": [],
    "classifier": [(f"classifier.{s}", f"classifier.{s}") for s in _WB],
    "qa": [(f"qa_outputs.{s}", f"qa_outputs.{s}") for s in _WB],
    "mlm": [
        *[(f"cls.predictions.transform.dense.{s}", f"cls.transform.dense.{s}") for s in _WB],
        *[(f"cls.predictions.transform.LayerNorm.{s}", f"cls.transform.norm.{s}") for s in _WB],
        ("cls.predictions.bias", "cls.bias"),
    ],
}
_UNTIED_DECODER = ("cls.predictions.decoder.weight", "cls.decoder.weight")

# Buffers (positions 0..511, zero token types) that older checkpoints saved: no weights.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
# The tied decoder is the word-embedding matrix, and its bias is ``cls.predictions.bias``:
# transformers 4 wrote both copies, transformers 5 writes neither.
_TIED_COPIES = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


def bert_key_map(head: str, *, pooler: bool, tied: bool = True, prefix: str = "bert.") -> KeyMap:
    """The map of a BERT model with ``head`` (a key of :data:`HEADS`).

    ``pooler``: the model has ``pooler.dense``; checkpoints of models without one may still carry
    it (a pre-trained encoder fine-tuned for tokens or spans) and it is ignored, as in Hugging Face.
    ``tied``: the masked-LM decoder is the word-embedding matrix. ``prefix``: our name of the base
    model inside the task model ("" for ``BertModel`` itself).
    """
    backbone = _BACKBONE + (_POOLER if pooler else [])
    rules = [Rule(hf, prefix + ours) for hf, ours in backbone]
    rules += [Rule(hf, ours, prefixed=False) for hf, ours in HEADS[head]]
    ignore = list(_BUFFERS) + ([] if pooler else [hf for hf, _ in _POOLER])
    if head == "mlm":
        if tied:
            ignore += list(_TIED_COPIES)
        else:
            # Untied, transformers 5 adds ``decoder.bias`` and leaves ``cls.predictions.bias`` unused
            # (transformers 4 kept them one tensor). Load the bias from ``decoder.bias``; save it under
            # both names, since an ignored key is skipped on load before any rule is tried.
            rules += [Rule(*_UNTIED_DECODER, prefixed=False),
                      Rule("cls.predictions.decoder.bias", "cls.bias", prefixed=False)]
            ignore.append("cls.predictions.bias")
    return KeyMap(rules, ignore=tuple(ignore), hf_prefixes=("bert.", ""))
