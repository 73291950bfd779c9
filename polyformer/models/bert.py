"""BERT (Devlin et al. 2018): word, position and segment embeddings read by a post-norm encoder.

Token ids become the sum of a word vector, a learned position vector and a token-type (segment)
vector, layer-normed; a post-norm :class:`~polyformer.transformer.Encoder` (``norm(x + f(x))``, no
final norm) reads them. The heads of :mod:`polyformer.models.heads` turn the hidden states into
sequence classes (from the tanh pooler), token classes, answer spans or masked words.

>>> config = BertConfig(vocab_size=100, d_model=32, n_layers=2, n_heads=4, d_ff=64, num_labels=3)
>>> model = BertForSequenceClassification(config).eval()
>>> ids = torch.randint(0, 100, (2, 7))
>>> model(input_ids=ids, attention_mask=torch.ones(2, 7)).logits.shape
torch.Size([2, 3])

Loads and saves Hugging Face ``BertModel``, ``BertForSequenceClassification``,
``BertForTokenClassification``, ``BertForQuestionAnswering`` and ``BertForMaskedLM`` folders; any
registered attention mechanism can replace the dense one (``config.with_attention("longformer")``).
Families built on BERT (LayoutLM's 2-D boxes, TAPAS's table token types) subclass
:class:`BertEmbeddings` and hand their extra vectors to its ``extra`` argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn

from polyformer.convert.keymap import KeyMap
from polyformer.errors import CheckpointError, ShapeError
from polyformer.layers import LayerNorm, LearnedPositions, TokenEmbedding
from polyformer.models import register_model
from polyformer.models.base import ENCODER_HF_NAMES, EncoderConfig, PretrainedModel, init_weights
from polyformer.models.bert_convert import bert_key_map
from polyformer.models.heads import (
    MaskedLMHead, Pooler, SpanHead, classification_loss, span_loss, token_cross_entropy,
)
from polyformer.models.outputs import (
    BaseModelOutputWithPooling, MaskedLMOutput, QuestionAnsweringModelOutput, SequenceClassifierOutput,
    TokenClassifierOutput,
)
from polyformer.options import require
from polyformer.transformer import Encoder, TransformerConfig

__all__ = [
    "BertConfig", "BertEmbeddings", "BertForMaskedLM", "BertForQuestionAnswering", "BertForSequenceClassification",
    "BertForTokenClassification", "BertModel", "BertPreTrainedModel", "init_bert_weights",
]


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
@dataclass
class BertConfig(EncoderConfig):
    """Sizes and switches of a BERT: :class:`~polyformer.models.base.EncoderConfig`'s (defaults are
    ``bert-base``'s) plus the embeddings' and the heads'.

    Embeddings: ``vocab_size``, ``max_position_embeddings``, ``type_vocab_size`` (segments),
    ``pad_token_id`` (its word vector starts at zero and gets no gradient). ``dropout`` applies to
    embeddings and sub-layers; ``attention_dropout`` is kept for the config.json round trip (the
    core applies no dropout to attention probabilities).
    Heads: ``classifier_dropout`` (None = ``dropout``), ``tie_word_embeddings`` (the masked-LM
    decoder is the word-embedding matrix).
    """

    model_types: ClassVar[tuple[str, ...]] = ("bert",)
    hf_names: ClassVar[dict[str, str]] = {
        **ENCODER_HF_NAMES, "vocab_size": "vocab_size", "attention_dropout": "attention_probs_dropout_prob",
        "max_position_embeddings": "max_position_embeddings", "type_vocab_size": "type_vocab_size",
        "pad_token_id": "pad_token_id", "position_embedding_type": "position_embedding_type",
        "classifier_dropout": "classifier_dropout", "tie_word_embeddings": "tie_word_embeddings",
    }

    dropout: float = 0.1
    vocab_size: int = 30522
    attention_dropout: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int | None = 0
    position_embedding_type: str = "absolute"
    classifier_dropout: float | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        self.check_encoder()
        self.check_positive("vocab_size", "max_position_embeddings", "type_vocab_size")
        require(self.position_embedding_type == "absolute",
                f"BertConfig.position_embedding_type {self.position_embedding_type!r} is not supported: polyformer's "
                "BERT has learned absolute positions only; use a checkpoint with 'absolute' positions")
        require(self.pad_token_id is None or 0 <= self.pad_token_id < self.vocab_size,
                f"BertConfig.pad_token_id must be null or in [0, vocab_size={self.vocab_size}), got {self.pad_token_id!r}")
        require(self.classifier_dropout is None or 0 <= self.classifier_dropout < 1,
                f"BertConfig.classifier_dropout must be null or in [0, 1), got {self.classifier_dropout!r}")
        self.transformer_config()  # checks activation, mechanism name and options now

    def transformer_config(self) -> TransformerConfig:
        """The core's config of the encoder: post-norm blocks, no final norm."""
        return TransformerConfig(
            d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, d_ff=self.d_ff,
            norm_eps=self.norm_eps, norm_position="post", final_norm=False, activation=self.activation,
            attention=self.attention, dropout=self.dropout,
        )

    @classmethod
    def extra_from_hf(cls, raw: dict[str, Any], where: str) -> dict[str, Any]:
        for flag in ("is_decoder", "add_cross_attention"):
            if raw.get(flag):
                raise CheckpointError(f"{where}: {flag}=true (a BERT decoder) is not supported; only encoders load")
        # An explicit null means "no padding token", which the table would read as absent (0).
        return {"pad_token_id": raw["pad_token_id"]} if "pad_token_id" in raw else {}


# ------------------------------------------------------------------------------------------------
# Embeddings
# ------------------------------------------------------------------------------------------------
class BertEmbeddings(nn.Module):
    """``norm(word + token type + position [+ extra ...])``, then dropout: (B, N) ids -> (B, N, d)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = TokenEmbedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.position_embeddings = LearnedPositions(config.max_position_embeddings, config.d_model)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.d_model)
        self.norm = LayerNorm(config.d_model, eps=config.norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        input_ids: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        extra: Sequence[Tensor] = (),
    ) -> Tensor:
        """Embed ``input_ids`` (B, N) or take ``inputs_embeds`` (B, N, d) as the word vectors.

        ``extra``: further (B, N, d) vectors summed in before the norm — how families built on
        BERT add their own embeddings (LayoutLM's boxes, TAPAS's table coordinates).
        """
        b, n = self.check_inputs(input_ids, token_type_ids, position_ids, inputs_embeds)
        device = (input_ids if input_ids is not None else inputs_embeds).device  # type: ignore[union-attr]
        if token_type_ids is None:
            token_type_ids = torch.zeros(b, n, dtype=torch.long, device=device)
        if position_ids is None:
            position_ids = torch.arange(n, device=device).expand(b, n)
        words = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        x = words + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)  # (B, N, d)
        for vectors in extra:
            x = x + vectors
        return self.dropout(self.norm(x))

    def check_inputs(self, input_ids: Tensor | None, token_type_ids: Tensor | None, position_ids: Tensor | None,
                     inputs_embeds: Tensor | None) -> tuple[int, int]:
        """(batch, length) of the inputs; a :class:`ShapeError` naming the fix for anything inconsistent."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ShapeError("BERT: pass exactly one of input_ids (batch, length) and inputs_embeds (batch, length, d)")
        d = self.norm.normalized_shape[0]
        if input_ids is not None and input_ids.dim() != 2:
            raise ShapeError(f"BERT: input_ids must be (batch, length), got {tuple(input_ids.shape)}; "
                             "add a batch dimension with ids[None] for one sequence")
        if inputs_embeds is not None and (inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != d):
            raise ShapeError(f"BERT: inputs_embeds must be (batch, length, {d}), got {tuple(inputs_embeds.shape)}")
        b, n = (input_ids if input_ids is not None else inputs_embeds).shape[:2]  # type: ignore[union-attr]
        limit = self.position_embeddings.n_positions
        if position_ids is None and n > limit:
            raise ShapeError(f"BERT: {n} tokens but max_position_embeddings is {limit}; truncate the input "
                             f"(e.g. tokenizer(..., truncation=True, max_length={limit}))")
        # position_ids may be shared by the whole batch: (length,) or (1, length)
        for name, ids, shared in (("token_type_ids", token_type_ids, ()), ("position_ids", position_ids, ((n,), (1, n)))):
            if ids is not None and tuple(ids.shape) != (b, n) and tuple(ids.shape) not in shared:
                raise ShapeError(f"BERT: {name} must be (batch, length) = {(b, n)} like input_ids, got {tuple(ids.shape)}")
        types = self.token_type_embeddings.num_embeddings
        if token_type_ids is not None and token_type_ids.numel() and (
                token_type_ids.is_floating_point() or int(token_type_ids.min()) < 0
                or int(token_type_ids.max()) >= types):
            raise ShapeError(f"BERT: token_type_ids must be integers in [0, type_vocab_size={types}), got "
                             f"values in [{token_type_ids.min().item()}, {token_type_ids.max().item()}]; "
                             + ("this model has one segment type: pass token_type_ids=None" if types == 1 else
                                "segment A is 0, segment B is 1"))
        return b, n


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------
def init_bert_weights(model: nn.Module, std: float) -> None:
    """Hugging Face's BERT initialisation: the shared N(0, std) one, then the padding vector and the
    masked-LM bias at zero."""
    init_weights(model, std)
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, MaskedLMHead):
            nn.init.zeros_(module.bias)


class BertPreTrainedModel(PretrainedModel):
    """What every BERT model shares: config, key map, loading and saving.

    ``head`` names the weights outside the base model (see ``bert_convert.HEADS``);
    ``add_pooling_layer`` says whether the base model has its pooler, as in Hugging Face.
    """

    model_type: ClassVar[str] = "bert"
    config_class: ClassVar[type] = BertConfig
    hf_save_prefix: ClassVar[str] = "bert."
    head: ClassVar[str] = "none"
    add_pooling_layer: ClassVar[bool] = False

    def _base(self, config: BertConfig) -> "BertModel":
        return BertModel(config, add_pooling_layer=self.add_pooling_layer)

    @classmethod
    def key_map(cls, config: BertConfig) -> KeyMap:
        return bert_key_map(cls.head, pooler=cls.add_pooling_layer, tied=config.tie_word_embeddings)


class BertModel(BertPreTrainedModel):
    """Embeddings, the post-norm encoder and the optional pooler (Hugging Face ``BertModel``)."""

    architectures: ClassVar[tuple[str, ...]] = ("BertModel",)
    hf_save_prefix: ClassVar[str] = ""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = Encoder(config.transformer_config())
        self.pooler = Pooler(config.d_model) if add_pooling_layer else None
        init_bert_weights(self, config.initializer_range)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        """Hidden states (B, N, d) of every token, and the pooled first token when there is a pooler.

        ``attention_mask`` (B, N): 1 for real tokens, 0 for padding (the tokenizer's mask).
        ``output_hidden_states``: the embeddings' output and each layer's; ``output_attentions``:
        each layer's (B, H, N, N) attention probabilities.
        """
        h = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, N, d)
        mask = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(h.shape[:2]):
                raise ShapeError(f"BERT: attention_mask must be (batch, length) = {tuple(h.shape[:2])}, got "
                                 f"{tuple(attention_mask.shape)}; 1 marks real tokens, 0 padding")
            mask = attention_mask.bool()
        out = self.encoder.run(h, key_padding_mask=mask, output_hidden_states=output_hidden_states,
                               output_attentions=output_attentions)
        h = out.last_hidden_state  # (B, N, d)
        pooled = self.pooler(h) if self.pooler is not None else None  # (B, d)
        return BaseModelOutputWithPooling(last_hidden_state=h, pooler_output=pooled, hidden_states=out.hidden_states,
                                          attentions=out.attentions)

    @classmethod
    def key_map(cls, config: BertConfig, add_pooling_layer: bool = True) -> KeyMap:
        return bert_key_map("none", pooler=add_pooling_layer, prefix="")

    @classmethod
    def build_options(cls, hf_state: dict[str, Tensor]) -> dict[str, Any]:
        # The pooler is built when the checkpoint has one (``add_pooling_layer=`` overrides).
        return {"add_pooling_layer": any(k.endswith("pooler.dense.weight") for k in hf_state)}

    def save_options(self) -> dict[str, Any]:
        return {"add_pooling_layer": self.pooler is not None}


def _classifier_dropout(config: BertConfig) -> nn.Dropout:
    return nn.Dropout(config.dropout if config.classifier_dropout is None else config.classifier_dropout)


class BertForSequenceClassification(BertPreTrainedModel):
    """A linear classifier on the pooled first token (Hugging Face ``BertForSequenceClassification``)."""

    architectures: ClassVar[tuple[str, ...]] = ("BertForSequenceClassification",)
    head, add_pooling_layer, head_weight = "classifier", True, "classifier.weight"

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = self._base(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        init_bert_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None,
                inputs_embeds: Tensor | None = None, labels: Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> SequenceClassifierOutput:
        """Class scores (B, num_labels); ``loss`` by Hugging Face's ``problem_type`` rule when ``labels`` given."""
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_hidden_states, output_attentions)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, num_labels)
        loss = None if labels is None else classification_loss(logits, labels, self.config.problem_type)
        return SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class BertForTokenClassification(BertPreTrainedModel):
    """A linear classifier on every token (Hugging Face ``BertForTokenClassification``)."""

    architectures: ClassVar[tuple[str, ...]] = ("BertForTokenClassification",)
    head, head_weight = "classifier", "classifier.weight"

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = self._base(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        init_bert_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None,
                inputs_embeds: Tensor | None = None, labels: Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> TokenClassifierOutput:
        """Scores (B, N, num_labels); ``loss`` is the cross-entropy over labels that are not -100."""
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_hidden_states, output_attentions)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, N, num_labels)
        loss = None if labels is None else token_cross_entropy(logits, labels)
        return TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Start and end scores of an answer span (Hugging Face ``BertForQuestionAnswering``)."""

    architectures: ClassVar[tuple[str, ...]] = ("BertForQuestionAnswering",)
    head = "qa"

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = self._base(config)
        self.qa_outputs = SpanHead(config.d_model)
        init_bert_weights(self.qa_outputs, config.initializer_range)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None,
                inputs_embeds: Tensor | None = None, start_positions: Tensor | None = None,
                end_positions: Tensor | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False) -> QuestionAnsweringModelOutput:
        """``start_logits`` / ``end_logits`` (B, N); ``loss`` when both answer positions (B,) are given."""
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_hidden_states, output_attentions)
        start, end = self.qa_outputs(out.last_hidden_state)  # (B, N) each
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_loss(start, end, start_positions, end_positions)
        return QuestionAnsweringModelOutput(loss, start, end, out.hidden_states, out.attentions)


class BertForMaskedLM(BertPreTrainedModel):
    """Scores over the vocabulary at every position (Hugging Face ``BertForMaskedLM``).

    The decoder is the word-embedding matrix (tied, one copy) unless ``tie_word_embeddings`` is off.
    """

    architectures: ClassVar[tuple[str, ...]] = ("BertForMaskedLM",)
    head = "mlm"

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = self._base(config)
        self.cls = MaskedLMHead(config.d_model, config.vocab_size, config.activation, config.norm_eps,
                                tied=config.tie_word_embeddings)
        init_bert_weights(self.cls, config.initializer_range)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None,
                inputs_embeds: Tensor | None = None, labels: Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> MaskedLMOutput:
        """Scores (B, N, vocab); ``loss`` is the cross-entropy at positions whose label is not -100."""
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_hidden_states, output_attentions)
        logits = self.cls(out.last_hidden_state, self.bert.embeddings.word_embeddings.weight)  # (B, N, vocab)
        loss = None if labels is None else token_cross_entropy(logits, labels)
        return MaskedLMOutput(loss, logits, out.hidden_states, out.attentions)


# BertModel first: a config.json without "architectures" loads as the bare encoder, as AutoModel does.
for _cls in (BertModel, BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering,
             BertForMaskedLM):
    register_model(_cls)
