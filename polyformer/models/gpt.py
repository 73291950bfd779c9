"""GPT-2, GPT-Neo and GPT-J: one decoder-only language-model family on the transformer core.

The three Hugging Face families differ only in a few switches, so one config and one model cover
them (``variant``):

* ``"gpt2"``: learned positions, fused ``c_attn`` Conv1D weights in the checkpoint, tied head.
* ``"gpt_neo"``: learned positions, unscaled scores (``q·k``), no q/k/v bias, and layers that
  alternate between global attention and *local* attention over the last ``window_size`` tokens
  (polyformer's ``sliding_window`` mechanism), tied head.
* ``"gptj"``: no position table but rotary angles on the first ``rotary_dim`` channels of each
  head (GPT-J's interleaved pairs), attention and MLP in parallel from one norm, untied head with
  a bias.

>>> config = GPTConfig(vocab_size=100, n_positions=32, d_model=32, n_layers=2, n_heads=4)
>>> model = GPTLMHeadModel(config)
>>> ids = torch.randint(0, 100, (2, 10))
>>> out = model(ids, labels=ids)
>>> out.logits.shape, out.loss.shape
(torch.Size([2, 10, 100]), torch.Size([]))

Any registered attention mechanism can replace the dense one (``attention="sliding_window"``);
GPT-Neo's local layers keep their window unless ``local_attention`` is given too (see
:meth:`GPTConfig.with_attention`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyformer.attention import AttentionSpec
from polyformer.convert.checkpoint import read_config
from polyformer.convert.keymap import KeyMap
from polyformer.errors import ConfigError, ShapeError
from polyformer.layers import LearnedPositions, TokenEmbedding
from polyformer.layers.linear_cross_entropy import linear_cross_entropy
from polyformer.models import register_model
from polyformer.models.base import FamilyConfig, PretrainedModel, final_normed_states, init_weights
from polyformer.models.outputs import CausalLMOutput, LazyLogitsCausalLMOutput
from polyformer.models.gpt_convert import gpt_key_map
from polyformer.options import require
from polyformer.transformer import Decoder, LayerCache, TransformerConfig, cache_length

__all__ = ["GPTConfig", "GPTLMHeadModel", "VARIANTS"]

VARIANTS = ("gpt2", "gpt_neo", "gptj")
LAYER_KINDS = ("global", "local")
_ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "gpt_neo": "GPTNeoForCausalLM", "gptj": "GPTJForCausalLM"}


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
_GPT2_NAMES = {
    "n_positions": ("n_positions", "n_ctx"), "d_model": "n_embd", "n_layers": "n_layer", "n_heads": "n_head",
    "d_ff": "n_inner", "dropout": "resid_pdrop",
}
_COMMON_NAMES = {
    "vocab_size": "vocab_size", "activation": "activation_function", "norm_eps": "layer_norm_epsilon",
    "tie_word_embeddings": "tie_word_embeddings", "initializer_range": "initializer_range",
    "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "pad_token_id": "pad_token_id",
}
_HF_NAMES = {
    "gpt2": {**_COMMON_NAMES, **_GPT2_NAMES, "scale_attn_weights": "scale_attn_weights",
             "scale_attn_by_inverse_layer_idx": "scale_attn_by_inverse_layer_idx"},
    "gptj": {**_COMMON_NAMES, **_GPT2_NAMES, "rotary_dim": "rotary_dim"},
    "gpt_neo": {**_COMMON_NAMES, "n_positions": "max_position_embeddings", "d_model": "hidden_size",
                "n_layers": "num_layers", "n_heads": "num_heads", "d_ff": "intermediate_size",
                "window_size": "window_size", "dropout": "resid_dropout"},
}


@dataclass
class GPTConfig(FamilyConfig):
    """Sizes and switches of a GPT-2 / GPT-Neo / GPT-J language model; a plain dataclass.

    Sizes: ``vocab_size``, ``n_positions`` (context length), ``d_model`` (``n_embd``), ``n_layers``,
    ``n_heads``, ``d_ff`` (MLP width, None = 4·d_model).
    ``variant``: "gpt2" | "gpt_neo" | "gptj" (see the module docstring).
    ``attention``: the mechanism of every (global) layer, a name, spec or
    ``{"name", "options"}`` dict. ``attention_layers`` (GPT-Neo): "global"/"local" per layer;
    ``window_size``: keys a local layer sees; ``local_attention``: the mechanism of the local
    layers (None = ``sliding_window`` with ``window_size``).
    ``rotary_dim`` (GPT-J): channels per head that rotate (None becomes the whole head).
    ``tie_word_embeddings``: output head shares the token embedding (None = the variant's default:
    tied for gpt2/gpt_neo, untied for gptj).
    ``scale_attn_weights`` / ``scale_attn_by_inverse_layer_idx``: GPT-2's score scaling switches.
    ``dropout``: on embeddings and on every sub-layer output (training only).
    """

    model_types: ClassVar[tuple[str, ...]] = VARIANTS
    hf_required: ClassVar[tuple[str, ...]] = ("vocab_size", "n_positions", "d_model", "n_layers", "n_heads")
    own_fields: ClassVar[tuple[str, ...]] = ("attention", "local_attention")

    vocab_size: int = 50257
    n_positions: int = 1024
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    d_ff: int | None = None
    variant: str = "gpt2"
    activation: str = "gelu_new"
    norm_eps: float = 1e-5
    dropout: float = 0.0
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    attention_layers: tuple[str, ...] | None = None
    window_size: int = 256
    local_attention: AttentionSpec | None = None
    rotary_dim: int | None = None
    tie_word_embeddings: bool | None = None
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    initializer_range: float = 0.02
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        self.attention = AttentionSpec.coerce(self.attention)
        if self.local_attention is not None:
            self.local_attention = AttentionSpec.coerce(self.local_attention)
        if self.attention_layers is not None:
            self.attention_layers = tuple(self.attention_layers)
        if self.tie_word_embeddings is None:
            self.tie_word_embeddings = self.variant != "gptj"
        self._validate()
        if self.variant == "gptj" and self.rotary_dim is None:
            self.rotary_dim = self.head_dim  # the whole head (Hugging Face needs a number)
        self.transformer_config()  # checks activation, mechanism names and options now

    # -- derived ----------------------------------------------------------------------------------
    @property
    def n_embd(self) -> int:
        """Hugging Face's name for ``d_model``."""
        return self.d_model

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        """"global" or "local" for every layer."""
        return self.attention_layers or ("global",) * self.n_layers

    def local_spec(self) -> AttentionSpec:
        """The mechanism of GPT-Neo's local layers."""
        if self.local_attention is not None:
            return self.local_attention
        return AttentionSpec("sliding_window", {"window": self.window_size})

    def layer_scales(self) -> list[float]:
        """The factor multiplying ``q·k`` in each layer."""
        base = 1.0 if self.variant == "gpt_neo" or not self.scale_attn_weights else 1 / math.sqrt(self.head_dim)
        if self.scale_attn_by_inverse_layer_idx:
            return [base / (i + 1) for i in range(self.n_layers)]
        return [base] * self.n_layers

    def transformer_config(self) -> TransformerConfig:
        """The core's config for this model's decoder stack."""
        gptj = self.variant == "gptj"
        local = {i: self.local_spec() for i, kind in enumerate(self.layer_kinds) if kind == "local"}
        return TransformerConfig(
            d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, d_ff=self.d_ff,
            norm_eps=self.norm_eps, activation=self.activation, parallel_residual=gptj,
            qkv_bias=self.variant == "gpt2", out_bias=not gptj,
            attention=self.attention, layer_attention=local,
            attention_scale=self.layer_scales(),
            rotary={"dim": self.rotary_dim, "interleaved": True} if gptj else None,
            dropout=self.dropout,
        )

    def with_attention(
        self, attention: AttentionSpec | str | dict | None = None, *,
        local: AttentionSpec | str | dict | None = None,
    ) -> "GPTConfig":
        """A copy with another mechanism.

        The rule: ``attention`` replaces the mechanism of every *global* layer — all layers of
        GPT-2 and GPT-J. GPT-Neo's local layers stay local (``sliding_window`` with the
        checkpoint's ``window_size``) unless ``local`` is given as well; pass the same spec twice
        to use one mechanism everywhere.
        """
        changes: dict[str, Any] = {}
        if attention is not None:
            changes["attention"] = AttentionSpec.coerce(attention)
        if local is not None:
            changes["local_attention"] = AttentionSpec.coerce(local)
        return dataclasses.replace(self, **changes)

    # -- checks -----------------------------------------------------------------------------------
    def _validate(self) -> None:
        for name in ("vocab_size", "n_positions", "d_model", "n_layers", "n_heads", "window_size"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                    f"GPTConfig.{name} must be a positive integer, got {value!r}")
        require(self.variant in VARIANTS,
                f"GPTConfig.variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        require(self.d_model % self.n_heads == 0,
                f"GPTConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.attention_layers is not None:
            require(self.variant == "gpt_neo",
                    "GPTConfig.attention_layers (global/local layers) belongs to variant 'gpt_neo'; to "
                    "change the mechanism of a GPT-2 or GPT-J use attention=...")
            require(len(self.attention_layers) == self.n_layers,
                    f"GPTConfig.attention_layers has {len(self.attention_layers)} entries for "
                    f"{self.n_layers} layers; give one 'global' or 'local' per layer")
            bad = sorted(set(self.attention_layers) - set(LAYER_KINDS))
            require(not bad, f"GPTConfig.attention_layers may hold only 'global' and 'local', got {bad}")
        if self.rotary_dim is not None:
            require(self.variant == "gptj", "GPTConfig.rotary_dim belongs to variant 'gptj'")
            require(isinstance(self.rotary_dim, int) and 0 < self.rotary_dim <= self.head_dim
                    and self.rotary_dim % 2 == 0,
                    f"GPTConfig.rotary_dim must be an even number in (0, head_dim={self.head_dim}], "
                    f"got {self.rotary_dim!r}")
        for name in ("tie_word_embeddings", "scale_attn_weights", "scale_attn_by_inverse_layer_idx"):
            require(isinstance(getattr(self, name), bool),
                    f"GPTConfig.{name} must be true or false, got {getattr(self, name)!r}")

    # -- Hugging Face config.json: key names differ per variant ---------------------------------------
    @classmethod
    def names_for(cls, model_type: str) -> dict[str, str | tuple[str, ...]]:
        return _HF_NAMES[model_type]

    def hf_model_type(self) -> str:
        return self.variant

    @classmethod
    def extra_from_hf(cls, raw: dict[str, Any], where: str) -> dict[str, Any]:
        if raw.get("add_cross_attention"):
            raise ConfigError("add_cross_attention=true (an encoder-decoder GPT-2) is not supported")
        extra: dict[str, Any] = {"variant": raw["model_type"]}
        if raw["model_type"] == "gpt_neo":
            layers = raw.get("attention_layers") or _expand_attention_types(raw.get("attention_types"))
            extra["attention_layers"] = tuple(layers) if layers else None
        return extra

    def extra_to_hf(self) -> dict[str, Any]:
        if self.variant == "gpt_neo":
            # one group holding every layer's kind expands to exactly this list
            return {"attention_types": [[list(self.layer_kinds), 1]], "attention_layers": list(self.layer_kinds),
                    "embed_dropout": self.dropout, "attention_dropout": 0.0}
        return {"n_ctx": self.n_positions, "embd_pdrop": self.dropout, "attn_pdrop": 0.0}


def _expand_attention_types(types: Any) -> list[str] | None:
    """GPT-Neo's ``[[["global", "local"], 12]]`` -> ["global", "local", ... ] (24 entries)."""
    if not types:
        return None
    try:
        return [kind for kinds, repeat in types for _ in range(int(repeat)) for kind in kinds]
    except (TypeError, ValueError):
        raise ConfigError(f"attention_types must look like [[['global', 'local'], 12]], got {types!r}") from None


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------
class GPTLMHeadModel(PretrainedModel):
    """Token (+ position) embeddings, a causal :class:`~polyformer.transformer.Decoder`, an LM head.

    Parameter names: ``wte``, ``wpe`` (not for GPT-J), ``decoder.layers.{i}....`` (the core's
    names), ``lm_head``. :meth:`forward` follows Hugging Face's causal-LM call.
    """

    architectures: ClassVar[tuple[str, ...]] = tuple(_ARCHITECTURES.values())
    config_class: ClassVar[type] = GPTConfig
    hf_save_prefix: ClassVar[str] = "transformer."
    tied_weights: ClassVar[dict[str, str]] = {"lm_head.weight": "wte.weight"}

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.wte = TokenEmbedding(config.vocab_size, config.d_model)
        self.wpe = LearnedPositions(config.n_positions, config.d_model) if config.variant != "gptj" else None
        self.drop = nn.Dropout(config.dropout)
        self.decoder = Decoder(config.transformer_config())
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=config.variant == "gptj")
        self.reset_parameters()
        if config.tie_word_embeddings:
            self.lm_head.weight = self.wte.weight

    def reset_parameters(self) -> None:
        """GPT-2's initialisation: N(0, 0.02); residual output projections scaled by 1/sqrt(2·layers)."""
        init_weights(self, self.config.initializer_range, residual_layers=self.config.n_layers)

    # -- the causal-LM call ---------------------------------------------------------------------
    def new_caches(self) -> list[LayerCache]:
        """Fresh decoding state, one per layer (each mechanism picks its own cache type)."""
        return self.decoder.new_caches()

    def can_crop_caches(self, caches: list[LayerCache]) -> bool:
        """Whether every layer's cache can forget positions (key/value caches can)."""
        return all(cache.self_attention.can_crop for cache in caches)

    def crop_caches(self, caches: list[LayerCache], length: int) -> None:
        """Keep the first ``length`` positions of every cache (speculative decoding)."""
        for cache in caches:
            cache.self_attention.crop(length)

    @property
    def max_positions(self) -> int:
        """The longest sequence (prompt + generated tokens) the model was trained for."""
        return self.config.n_positions

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        labels: Tensor | None = None,
        caches: list[LayerCache] | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> CausalLMOutput:
        """Next-token logits for ``input_ids`` (B, T).

        ``attention_mask`` (B, cached + T), 1 = real token; ``position_ids`` (B, T) default to
        ``cached, cached+1, ...`` (pass ``(mask.cumsum(-1) - 1).clamp(min=0)`` for left padding).
        ``labels`` (B, T) give ``loss``: labels are shifted inside (position t predicts t+1) and
        -100 is ignored. ``caches`` (from :meth:`new_caches`) make the call incremental.
        ``logits_to_keep`` > 0 computes logits for the last positions only (generation).
        ``output_hidden_states`` / ``output_attentions`` as in Hugging Face (the last hidden state
        is the one after the final norm, as GPT-2's).
        """
        if input_ids.dim() != 2:
            raise ShapeError(f"GPTLMHeadModel: input_ids must be (batch, length), got {tuple(input_ids.shape)}")
        b, t = input_ids.shape
        past = cache_length(caches)
        if past + t > self.config.n_positions:
            raise ShapeError(
                f"GPTLMHeadModel: {past + t} positions ({past} cached + {t} new) exceed the context of "
                f"{self.config.n_positions}; truncate the input to its last {self.config.n_positions} tokens"
            )
        if position_ids is None:
            position_ids = torch.arange(past, past + t, device=input_ids.device)[None]  # (1, T)
        h = self.wte(input_ids)  # (B, T, d)
        if self.wpe is not None:
            h = h + self.wpe(position_ids)
        h = self.drop(h)
        out = self.decoder.run(h, key_padding_mask=attention_mask, position_ids=position_ids, caches=caches,
                               output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        h = out.last_hidden_state
        extra = dict(caches=caches, hidden_states=final_normed_states(out), attentions=out.attentions)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        if labels is not None and not logits_to_keep:
            # head + loss in chunks: the (B, T, V) logits are formed only if someone asks for them
            loss = fused_next_token_loss(h, self.lm_head, labels)
            return LazyLogitsCausalLMOutput(loss=loss, final_hidden=h, head=self.lm_head, **extra)
        logits = self.lm_head(h)  # (B, T, V)
        loss = None if labels is None else next_token_loss(logits, labels)
        return CausalLMOutput(loss=loss, logits=logits, **extra)

    # -- checkpoints ------------------------------------------------------------------------------
    @classmethod
    def key_map(cls, config: GPTConfig) -> KeyMap:
        return gpt_key_map(config.variant)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        attention: AttentionSpec | str | dict | None = None,
        local_attention: AttentionSpec | str | dict | None = None,
        dtype: torch.dtype | None = None,
    ) -> "GPTLMHeadModel":
        """Load a Hugging Face GPT-2 / GPT-Neo / GPT-J folder.

        ``attention`` swaps the mechanism of every global layer, ``local_attention`` that of
        GPT-Neo's local layers (see :meth:`GPTConfig.with_attention`).
        """
        config = GPTConfig.from_hf(read_config(path), str(Path(path) / "config.json"))
        if attention is not None or local_attention is not None:
            config = config.with_attention(attention, local=local_attention)
        return cls.from_config_and_weights(config, path, dtype=dtype)

    def hf_architecture(self) -> str:
        return _ARCHITECTURES[self.config.variant]


def _shifted_labels(labels: Tensor, shape: torch.Size, ignore_index: int) -> Tensor:
    """(B, T) targets: token t+1 for position t, ``ignore_index`` for the last position."""
    if labels.shape != shape:
        raise ShapeError(f"labels must be (batch, length) = {tuple(shape)}, got {tuple(labels.shape)}")
    return F.pad(labels[:, 1:], (0, 1), value=ignore_index)


def fused_next_token_loss(hidden: Tensor, head: nn.Linear, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """:func:`next_token_loss` of ``head(hidden)`` without forming the logits (see
    :mod:`polyformer.layers.linear_cross_entropy`)."""
    targets = _shifted_labels(labels, hidden.shape[:-1], ignore_index)  # (B, T)
    device = hidden.device.type
    compute_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    return linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias,
                                targets.reshape(-1), ignore_index, compute_dtype=compute_dtype)


def next_token_loss(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean cross-entropy of position t's logits against token t+1 (Hugging Face's shift).

    The labels are shifted (and padded with ``ignore_index``) instead of slicing the logits, which
    would copy the largest tensor of the step.
    """
    shifted = _shifted_labels(labels, logits.shape[:-1], ignore_index)  # (B, T)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), shifted.reshape(-1), ignore_index=ignore_index)


# One registered class per Hugging Face model_type; all three are the same model.
@register_model
class GPT2LM(GPTLMHeadModel):
    """GPT-2 (Hugging Face ``GPT2LMHeadModel``)."""

    model_type = "gpt2"
    architectures = ("GPT2LMHeadModel",)


@register_model
class GPTNeoLM(GPTLMHeadModel):
    """GPT-Neo (Hugging Face ``GPTNeoForCausalLM``)."""

    model_type = "gpt_neo"
    architectures = ("GPTNeoForCausalLM",)


@register_model
class GPTJLM(GPTLMHeadModel):
    """GPT-J (Hugging Face ``GPTJForCausalLM``)."""

    model_type = "gptj"
    architectures = ("GPTJForCausalLM",)
