"""What models return: dataclasses with Hugging Face's field names.

Code written for ``transformers`` reads ``out.logits``, ``out.last_hidden_state`` or ``out[0]``;
every family returns one of these so that such code runs unchanged. As in ``transformers``, fields
that are None are left out of the tuple view (``out[0]`` is the loss only when there is one).

>>> out = SequenceClassifierOutput(logits=torch.zeros(2, 3))
>>> out[0].shape, out["logits"].shape, len(out.to_tuple())
(torch.Size([2, 3]), torch.Size([2, 3]), 1)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch  # noqa: F401  (the doctest above uses it)
from torch import Tensor

__all__ = [
    "BaseModelOutput",
    "BaseModelOutputWithPooling",
    "CLIPOutput",
    "CLIPTextModelOutput",
    "CLIPVisionModelOutput",
    "CausalLMOutput",
    "ImageClassifierOutput",
    "LazyLogitsCausalLMOutput",
    "MaskedLMOutput",
    "ModelOutput",
    "QuestionAnsweringModelOutput",
    "SequenceClassifierOutput",
    "TokenClassifierOutput",
]

Hidden = tuple[Tensor, ...] | None


class ModelOutput:
    """Mixin for output dataclasses: attribute, key and index access, and ``to_tuple()``."""

    def to_tuple(self) -> tuple[Any, ...]:
        """The fields that are not None, in declaration order."""
        return tuple(v for v in (getattr(self, f.name) for f in dataclasses.fields(self)) if v is not None)  # type: ignore[arg-type]

    def keys(self) -> list[str]:
        """Names of the fields that are not None."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]  # type: ignore[arg-type]

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{type(self).__name__} has no field {key!r} set; set fields: {', '.join(self.keys())}")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.to_tuple())


@dataclass
class BaseModelOutput(ModelOutput):
    """``last_hidden_state`` (B, N, d); ``hidden_states`` (the embeddings' output, then each layer's)
    and ``attentions`` (B, H, N, N) per layer when asked for."""

    last_hidden_state: Tensor
    hidden_states: Hidden = None
    attentions: Hidden = None


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    """:class:`BaseModelOutput` plus ``pooler_output`` (B, d) when the model has a pooler."""

    last_hidden_state: Tensor
    pooler_output: Tensor | None = None
    hidden_states: Hidden = None
    attentions: Hidden = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    """``logits`` (B, num_labels); ``loss`` when labels were given."""

    loss: Tensor | None = None
    logits: Tensor = None  # type: ignore[assignment]
    hidden_states: Hidden = None
    attentions: Hidden = None


#: Image classifiers return the same fields as sequence classifiers (Hugging Face's name).
ImageClassifierOutput = SequenceClassifierOutput


@dataclass
class TokenClassifierOutput(ModelOutput):
    """``logits`` (B, N, num_labels); ``loss`` when labels were given (-100 = ignored)."""

    loss: Tensor | None = None
    logits: Tensor = None  # type: ignore[assignment]
    hidden_states: Hidden = None
    attentions: Hidden = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    """``start_logits`` and ``end_logits`` (B, N); ``loss`` when answer positions were given."""

    loss: Tensor | None = None
    start_logits: Tensor = None  # type: ignore[assignment]
    end_logits: Tensor = None  # type: ignore[assignment]
    hidden_states: Hidden = None
    attentions: Hidden = None


@dataclass
class CausalLMOutput(ModelOutput):
    """``logits`` (B, T, vocab) of the next token; ``loss`` (shifted mean cross-entropy) with labels;
    ``caches``: the decoding state passed in, updated (polyformer's ``past_key_values``)."""

    loss: Tensor | None = None
    logits: Tensor = None  # type: ignore[assignment]
    hidden_states: Hidden = None
    attentions: Hidden = None
    caches: Any = None


class LazyLogitsCausalLMOutput(CausalLMOutput):
    """A :class:`CausalLMOutput` whose logits were not formed (the loss came from a chunked
    head + loss kernel): ``head(final_hidden)`` is computed on first access, with gradients if
    autograd is on at that moment."""

    def __init__(self, *, loss: Tensor, final_hidden: Tensor, head: Callable[[Tensor], Tensor], **fields: Any) -> None:
        self._final_hidden, self._head = final_hidden, head
        super().__init__(loss=loss, logits=None, **fields)  # type: ignore[arg-type]

    @property  # type: ignore[override]
    def logits(self) -> Tensor:
        if self._logits is None and self._head is not None:
            self._logits = self._head(self._final_hidden)
            self._final_hidden = self._head = None  # type: ignore[assignment]
        return self._logits

    @logits.setter
    def logits(self, value: Tensor | None) -> None:
        self._logits = value

    def __repr__(self) -> str:
        formed = "not formed yet" if self._logits is None else tuple(self._logits.shape)
        return f"CausalLMOutput(loss={self.loss}, logits={formed})"


@dataclass
class MaskedLMOutput(ModelOutput):
    """``logits`` (B, N, vocab); ``loss`` when labels were given (-100 = not masked)."""

    loss: Tensor | None = None
    logits: Tensor = None  # type: ignore[assignment]
    hidden_states: Hidden = None
    attentions: Hidden = None


@dataclass
class CLIPOutput(ModelOutput):
    """A contrastive image-text model's output (Hugging Face ``CLIPOutput``).

    ``logits_per_image`` (images, texts): scaled cosine similarities, ``logits_per_text`` its
    transpose; ``text_embeds`` / ``image_embeds``: unit-length projections; ``loss``: the symmetric
    contrastive loss when asked for; ``text_model_output`` / ``vision_model_output``: the towers'
    :class:`BaseModelOutputWithPooling` (hidden states and attentions live there).
    """

    loss: Tensor | None = None
    logits_per_image: Tensor = None  # type: ignore[assignment]
    logits_per_text: Tensor = None  # type: ignore[assignment]
    text_embeds: Tensor = None  # type: ignore[assignment]
    image_embeds: Tensor = None  # type: ignore[assignment]
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None


@dataclass
class CLIPTextModelOutput(ModelOutput):
    """A text tower with a projection: ``text_embeds`` (B, projection_dim, not normalised) and the states."""

    text_embeds: Tensor = None  # type: ignore[assignment]
    last_hidden_state: Tensor = None  # type: ignore[assignment]
    hidden_states: Hidden = None
    attentions: Hidden = None


@dataclass
class CLIPVisionModelOutput(ModelOutput):
    """An image tower with a projection: ``image_embeds`` (B, projection_dim, not normalised) and the states."""

    image_embeds: Tensor = None  # type: ignore[assignment]
    last_hidden_state: Tensor = None  # type: ignore[assignment]
    hidden_states: Hidden = None
    attentions: Hidden = None
