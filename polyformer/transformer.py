"""The shared transformer core: a serialisable config, one Block, an Encoder and a causal Decoder.

Every model family is a front-end (token, patch, audio... embeddings) plus one of these stacks plus
a head. The config says everything that differs between the Hugging Face families (pre/post norm,
norm kind, activation, MLP kind, parallel residual, biases, rotary, attention scale); the attention
mechanism is an :class:`~polyformer.attention.AttentionSpec` (a name plus its options), optionally
different per layer, so every model runs with every registered mechanism.

>>> cfg = TransformerConfig(d_model=32, n_heads=4, n_layers=2)
>>> x = torch.randn(1, 5, 32)
>>> Decoder(cfg)(x).shape
torch.Size([1, 5, 32])
>>> out = Encoder(cfg).run(x, output_hidden_states=True, output_attentions=True)
>>> len(out.hidden_states), out.attentions[0].shape
(3, torch.Size([1, 4, 5, 5]))

A family whose layer differs (TimeSformer's time-then-space block) passes its own layer builder,
``Encoder(config, block_fn=MyBlock)``, with the forward signature documented on :class:`Block`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence, Union

import torch
from torch import Tensor, nn

from polyformer.attention import AttentionCache, AttentionSpec, mechanism_class
from polyformer.errors import ConfigError, ShapeError
from polyformer.layers.activations import ACTIVATIONS
from polyformer.layers.attention import CrossAttention, CrossAttentionCache, MultiHeadAttention
from polyformer.layers.drop_path import DropPath, drop_path_rates
from polyformer.layers.mlp import MLP_KINDS, build_mlp
from polyformer.layers.norms import NORMS, build_norm
from polyformer.layers.rotary import RotaryAngles, RotaryEmbedding, RotaryOptions
from polyformer.options import make_options, require

__all__ = [
    "AttentionBias",
    "Block",
    "BlockFn",
    "CrossAttention",
    "Decoder",
    "Encoder",
    "LayerCache",
    "MultiHeadAttention",
    "RotaryOptions",
    "StackOutput",
    "TransformerConfig",
    "cache_length",
    "default_position_ids",
]

NORM_POSITIONS = ("pre", "post")


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
@dataclass
class TransformerConfig:
    """Everything a stack of blocks needs; a plain dataclass with a JSON round trip.

    Sizes: ``d_model`` (width), ``n_heads``, ``n_layers``, ``d_ff`` (MLP width, None = 4·d_model),
    ``head_dim`` (None = d_model / n_heads).
    Norms: ``norm`` ("layernorm" | "rmsnorm"), ``norm_eps``, ``norm_position`` ("pre": x + f(norm x),
    "post": norm(x + f(x))), ``final_norm`` (a norm after the last block; None = only for pre-norm).
    Feed-forward: ``activation`` (Hugging Face names), ``mlp`` ("mlp" | "gated"),
    ``parallel_residual`` (GPT-J: x + attn(norm x) + mlp(norm x), one shared norm).
    Biases: ``qkv_bias``, ``out_bias`` (attention output), ``mlp_bias``.
    Attention: ``attention`` (spec for every layer), ``layer_attention`` (per-layer overrides,
    {layer: spec} or a list with None for "default"), ``attention_scale`` (None = 1/sqrt(head_dim);
    a number for every layer, or a list with one positive number per layer, e.g. GPT-2's
    ``scale_attn_by_inverse_layer_idx``), ``rotary`` (None, or :class:`RotaryOptions`).
    Regularisation: ``dropout`` on each sub-layer output before the residual add; ``drop_path``
    (stochastic depth: the rate of the last layer, rising linearly from 0 at the first);
    ``layer_drop`` (LayerDrop: the probability of skipping a whole layer). All are off in eval.
    Cross-attention: ``cross_attention`` (None/False = none; True or a spec = a cross-attention
    sub-layer with that mechanism, dense for True), ``cross_attention_first`` (LXMERT order:
    cross-attention before self-attention), ``cross_attention_dim`` (width of the attended states,
    None = d_model).
    """

    d_model: int
    n_heads: int
    n_layers: int
    d_ff: int | None = None
    head_dim: int | None = None
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_position: str = "pre"
    final_norm: bool | None = None
    activation: str = "gelu"
    mlp: str = "mlp"
    parallel_residual: bool = False
    qkv_bias: bool = True
    out_bias: bool = True
    mlp_bias: bool = True
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    layer_attention: dict[int, AttentionSpec] = field(default_factory=dict)
    attention_scale: float | list[float] | None = None
    rotary: RotaryOptions | None = None
    dropout: float = 0.0
    drop_path: float = 0.0
    layer_drop: float = 0.0
    cross_attention: AttentionSpec | None = None
    cross_attention_first: bool = False
    cross_attention_dim: int | None = None

    def __post_init__(self) -> None:
        self.attention = _coerce_spec(self.attention, "attention")
        self.layer_attention = _coerce_layer_attention(self.layer_attention, self.n_layers)
        if isinstance(self.attention_scale, tuple):
            self.attention_scale = list(self.attention_scale)  # one JSON spelling
        if self.rotary is not None and not isinstance(self.rotary, RotaryOptions):
            if not isinstance(self.rotary, dict):
                raise ConfigError(
                    f"rotary must be null or {{'dim', 'base', 'interleaved'}}, got {self.rotary!r}"
                )
            self.rotary = make_options(RotaryOptions, self.rotary, where="rotary")
        if self.cross_attention is False:
            self.cross_attention = None
        elif self.cross_attention is True:
            self.cross_attention = AttentionSpec("dense")
        elif self.cross_attention is not None:
            self.cross_attention = _coerce_spec(self.cross_attention, "cross_attention")
        self._validate()

    # -- derived sizes ----------------------------------------------------------------------------
    @property
    def attention_head_dim(self) -> int:
        """Width of one head: ``head_dim`` or ``d_model // n_heads``."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def ff_dim(self) -> int:
        """Hidden width of the MLP: ``d_ff`` or ``4 * d_model``."""
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    @property
    def uses_final_norm(self) -> bool:
        """Whether the stack ends with a norm (default: yes for pre-norm, no for post-norm)."""
        return self.final_norm if self.final_norm is not None else self.norm_position == "pre"

    def attention_for(self, layer: int) -> AttentionSpec:
        """The attention spec of ``layer``: its override, else the default ``attention``."""
        return self.layer_attention.get(layer, self.attention)

    def attention_scale_for(self, layer: int) -> float | None:
        """The score scale of ``layer`` (None = 1/sqrt(head_dim))."""
        if isinstance(self.attention_scale, list):
            return float(self.attention_scale[layer])
        return self.attention_scale

    def drop_path_for(self, layer: int) -> float:
        """The stochastic-depth rate of ``layer``: linear from 0 (first) to ``drop_path`` (last)."""
        return drop_path_rates(self.drop_path, self.n_layers)[layer]

    # -- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` rebuilds an equal config."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, AttentionSpec):
                value = _spec_to_dict(value)
            elif isinstance(value, RotaryOptions):
                value = dataclasses.asdict(value)
            elif f.name == "layer_attention":
                value = {str(i): _spec_to_dict(s) for i, s in sorted(value.items())}
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TransformerConfig":
        """The config described by ``data`` (as written by :meth:`to_dict`); checks every field."""
        if not isinstance(data, dict):
            raise ConfigError(f"a transformer config must be a dict, got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown transformer config field(s) {unknown}; valid fields: {', '.join(known)}"
            )
        missing = [name for name in ("d_model", "n_heads", "n_layers") if name not in data]
        if missing:
            raise ConfigError(f"transformer config is missing required field(s): {', '.join(missing)}")
        return cls(**data)

    # -- checks -------------------------------------------------------------------------------------
    def _validate(self) -> None:
        for name in ("d_model", "n_heads", "n_layers"):
            _require_positive_int(getattr(self, name), name)
        for name in ("d_ff", "head_dim", "cross_attention_dim"):
            if getattr(self, name) is not None:
                _require_positive_int(getattr(self, name), name, "or null for the default")
        if self.head_dim is None:
            require(
                self.d_model % self.n_heads == 0,
                f"d_model ({self.d_model}) is not divisible by n_heads ({self.n_heads}); choose "
                f"n_heads dividing d_model (e.g. {_divisor_hint(self.d_model, self.n_heads)}) or "
                "set head_dim explicitly",
            )
        require(self.norm in NORMS, f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        require(
            isinstance(self.norm_eps, (int, float)) and self.norm_eps > 0,
            f"norm_eps must be a positive number (e.g. 1e-5, 1e-6 or 1e-12), got {self.norm_eps!r}",
        )
        require(
            self.norm_position in NORM_POSITIONS,
            f"norm_position must be 'pre' (GPT-2, ViT, CLIP) or 'post' (BERT), got {self.norm_position!r}",
        )
        require(
            self.activation in ACTIVATIONS,
            f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}",
        )
        require(self.mlp in MLP_KINDS, f"mlp must be one of {', '.join(MLP_KINDS)}, got {self.mlp!r}")
        require(
            self.final_norm is None or isinstance(self.final_norm, bool),
            f"final_norm must be true, false or null, got {self.final_norm!r}",
        )
        for name in ("parallel_residual", "qkv_bias", "out_bias", "mlp_bias", "cross_attention_first"):
            value = getattr(self, name)
            require(isinstance(value, bool), f"{name} must be true or false, got {value!r}")
        self._validate_attention_scale()
        for name in ("dropout", "drop_path", "layer_drop"):
            value = getattr(self, name)
            require(
                isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0,
                f"{name} must be in [0, 1) (a probability), got {value!r}",
            )
        if self.rotary is not None and self.rotary.dim is not None:
            require(
                self.rotary.dim <= self.attention_head_dim,
                f"rotary.dim ({self.rotary.dim}) exceeds the head dim ({self.attention_head_dim}); "
                "use at most head_dim channels, or null for the whole head",
            )
        if self.parallel_residual:
            require(
                self.norm_position == "pre",
                "parallel_residual needs norm_position='pre' (x + attn(norm x) + mlp(norm x))",
            )
            require(
                self.cross_attention is None,
                "parallel_residual cannot be combined with cross_attention; use sequential blocks",
            )
        require(
            not self.cross_attention_first or self.cross_attention is not None,
            "cross_attention_first needs cross_attention (set cross_attention=true)",
        )


    def _validate_attention_scale(self) -> None:
        scale = self.attention_scale
        usage = (
            "attention_scale must be a positive number, a list of one positive number per layer "
            f"({self.n_layers}), or null (= 1/sqrt(head_dim))"
        )
        if isinstance(scale, list):
            require(len(scale) == self.n_layers, f"{usage}; got a list of {len(scale)}")
            for i, value in enumerate(scale):
                require(_is_positive_number(value), f"{usage}; layer {i} has {value!r}")
        else:
            require(scale is None or _is_positive_number(scale), f"{usage}; got {scale!r}")


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _require_positive_int(value: Any, name: str, extra: str = "") -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    require(ok, f"{name} must be a positive integer{' ' + extra if extra else ''}, got {value!r}")


def _divisor_hint(d_model: int, n_heads: int) -> str:
    """A couple of head counts near ``n_heads`` that divide ``d_model``."""
    divisors = [h for h in range(1, d_model + 1) if d_model % h == 0]
    nearest = sorted(divisors, key=lambda h: (abs(h - n_heads), h))[:2]
    return " or ".join(str(h) for h in sorted(nearest))


def _spec_to_dict(spec: AttentionSpec) -> dict[str, Any]:
    return {"name": spec.name, "options": dict(spec.options)}


def _coerce_spec(value: Any, where: str) -> AttentionSpec:
    """An AttentionSpec from a spec, name or dict, with its name and options checked now."""
    spec = AttentionSpec.coerce(value)
    cls = mechanism_class(spec.name)  # unknown names list the known ones
    make_options(cls.Options, dict(spec.options), where=f"{where} ({spec.name!r})")
    return spec


def _coerce_layer_attention(value: Any, n_layers: int) -> dict[int, AttentionSpec]:
    """Per-layer overrides from ``{layer: spec}`` (int or digit-string keys) or a list of specs/None."""
    if value is None:
        return {}
    if isinstance(value, (list, tuple)):
        require(
            len(value) == n_layers,
            f"layer_attention as a list needs one entry per layer ({n_layers}), got {len(value)}; "
            "use null entries for layers that keep the default, or a {layer: spec} mapping",
        )
        items = [(i, spec) for i, spec in enumerate(value) if spec is not None]
    elif isinstance(value, dict):
        items = list(value.items())
    else:
        raise ConfigError(
            f"layer_attention must be a {{layer: spec}} mapping or a list, got {type(value).__name__}"
        )
    out: dict[int, AttentionSpec] = {}
    for key, spec in items:
        try:
            layer = int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"layer_attention keys must be layer numbers, got {key!r}") from None
        require(
            0 <= layer < n_layers,
            f"layer_attention names layer {layer}, but layers are 0..{n_layers - 1}",
        )
        out[layer] = _coerce_spec(spec, f"layer_attention[{layer}]")
    return out


# ------------------------------------------------------------------------------------------------
# One block
# ------------------------------------------------------------------------------------------------
@dataclass
class LayerCache:
    """Decoding state of one block: the mechanism's own self-attention cache and cross-attention k/v."""

    self_attention: AttentionCache
    cross_attention: CrossAttentionCache | None = None


class Block(nn.Module):
    """Self-attention (+ optional cross-attention) and an MLP, each in a residual branch.

    Sub-module names are stable for checkpoint key maps: ``attn_norm``, ``attn`` (``q_proj``,
    ``k_proj``, ``v_proj``, ``out_proj``), ``cross_norm``, ``cross_attn``, ``mlp_norm``, ``mlp``
    (``fc_in``/``fc_out`` or ``gate_proj``/``up_proj``/``down_proj``). With a parallel residual
    there is no ``mlp_norm``: ``attn_norm`` feeds both branches.

    **The block protocol.** A stack calls each layer as::

        layer(x, *, causal, key_padding_mask, rotary, cache, encoder_states, encoder_padding_mask,
              attention_bias, score_mod, output_attentions)

    and expects ``x``'s shape back, or with ``output_attentions=True`` a tuple ``(x, attentions,
    cross_attentions)`` of the (B, H, N, N) self-attention probabilities and the cross-attention
    ones (None without cross-attention). A layer built by a ``block_fn`` follows the same
    protocol (and has ``new_cache()`` when used in a :class:`Decoder` with caches); it may raise
    ConfigError for arguments it does not support.
    """

    def __init__(self, config: TransformerConfig, layer_index: int = 0) -> None:
        super().__init__()
        c = config
        self.pre_norm = c.norm_position == "pre"
        self.parallel = c.parallel_residual
        self.cross_first = c.cross_attention_first
        self.attn_norm = build_norm(c.norm, c.d_model, c.norm_eps)
        self.attn = MultiHeadAttention(
            c.d_model, c.n_heads, c.attention_head_dim, attention=c.attention_for(layer_index),
            qkv_bias=c.qkv_bias, out_bias=c.out_bias, scale=c.attention_scale_for(layer_index),
        )
        self.cross_norm: nn.Module | None = None
        self.cross_attn: CrossAttention | None = None
        if c.cross_attention is not None:
            self.cross_norm = build_norm(c.norm, c.d_model, c.norm_eps)
            self.cross_attn = CrossAttention(
                c.d_model, c.n_heads, c.attention_head_dim, attention=c.cross_attention,
                qkv_bias=c.qkv_bias, out_bias=c.out_bias, scale=c.attention_scale_for(layer_index),
                kv_dim=c.cross_attention_dim,
            )
        self.mlp_norm = None if self.parallel else build_norm(c.norm, c.d_model, c.norm_eps)
        self.mlp = build_mlp(c.mlp, c.d_model, c.ff_dim, c.activation, c.mlp_bias)
        self.dropout = nn.Dropout(c.dropout)
        self.drop_path = DropPath(c.drop_path_for(layer_index))

    def new_cache(self) -> LayerCache:
        """A fresh decoding state for this block."""
        cross = CrossAttentionCache() if self.cross_attn is not None else None
        return LayerCache(self.attn.mechanism.new_cache(), cross)

    def forward(
        self,
        x: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        rotary: RotaryAngles | None = None,
        cache: LayerCache | None = None,
        encoder_states: Tensor | None = None,
        encoder_padding_mask: Tensor | None = None,
        attention_bias: Tensor | None = None,
        score_mod: Any = None,
        output_attentions: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor | None]:
        """(B, N, d_model) -> (B, N, d_model); see :class:`Decoder` for the cache contract.

        ``attention_bias`` and ``score_mod`` go to the self-attention mechanism only.
        """
        probs: dict[str, Tensor] = {}

        def self_attention(h: Tensor) -> Tensor:
            out = self.attn(
                h, causal=causal, key_padding_mask=key_padding_mask, rotary=rotary,
                cache=None if cache is None else cache.self_attention,
                attention_bias=attention_bias, score_mod=score_mod, output_attentions=output_attentions,
            )
            if output_attentions:
                out, probs["self"] = out
            return out

        def branch(out: Tensor) -> Tensor:
            return self.drop_path(self.dropout(out))

        if self.parallel:
            h = self.attn_norm(x)
            x = x + branch(self_attention(h)) + branch(self.mlp(h))
            return (x, probs["self"], None) if output_attentions else x

        steps = [(self.attn_norm, self_attention)]
        if self.cross_attn is not None:

            def cross_attention(h: Tensor) -> Tensor:
                out = self.cross_attn(  # type: ignore[misc]
                    h, encoder_states, context_padding_mask=encoder_padding_mask,
                    cache=None if cache is None else cache.cross_attention,
                    output_attentions=output_attentions,
                )
                if output_attentions:
                    out, probs["cross"] = out
                return out

            steps.insert(0 if self.cross_first else 1, (self.cross_norm, cross_attention))
        steps.append((self.mlp_norm, self.mlp))
        for norm, sublayer in steps:
            if self.pre_norm:
                x = x + branch(sublayer(norm(x)))
            else:
                x = norm(x + branch(sublayer(x)))
        return (x, probs["self"], probs.get("cross")) if output_attentions else x


#: Builds layer ``layer_index`` of a stack: ``block_fn(config, layer_index) -> nn.Module``.
BlockFn = Callable[[TransformerConfig, int], nn.Module]

#: A bias on the self-attention scores: one tensor broadcastable to (B, H, N, N_keys) for every
#: layer, a sequence with one entry (tensor or None) per layer, or ``layer_index -> tensor | None``.
AttentionBias = Union[Tensor, Sequence[Union[Tensor, None]], Callable[[int], Union[Tensor, None]], None]


# ------------------------------------------------------------------------------------------------
# Stacks
# ------------------------------------------------------------------------------------------------
def default_position_ids(
    batch: int, length: int, past: int = 0, device: torch.device | None = None
) -> Tensor:
    """(B, N) positions ``past, past+1, ...``: where new tokens sit after ``past`` cached ones."""
    return torch.arange(past, past + length, device=device).expand(batch, length)


def cache_length(caches: list[LayerCache] | None) -> int:
    """How many positions the caches already hold (0 for None)."""
    return 0 if not caches else len(caches[0].self_attention)


@dataclass
class StackOutput:
    """What :meth:`Encoder.run` / :meth:`Decoder.run` return (Hugging Face's field names).

    ``last_hidden_state`` (B, N, d_model) has the final norm applied. ``hidden_states`` (when
    asked): the stack's input, then each layer's output (n_layers + 1 tensors, no final norm).
    ``attentions`` / ``cross_attentions`` (when asked): per layer, (B, H, N, N_keys) probabilities;
    None for a layer that LayerDrop skipped (and ``cross_attentions`` None without cross-attention).
    """

    last_hidden_state: Tensor
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor | None, ...] | None = None
    cross_attentions: tuple[Tensor | None, ...] | None = None


def _bias_for_layer(attention_bias: AttentionBias, layer: int) -> Tensor | None:
    if attention_bias is None or isinstance(attention_bias, Tensor):
        return attention_bias
    if callable(attention_bias):
        return attention_bias(layer)
    return attention_bias[layer]


def _check_attention_bias(attention_bias: AttentionBias, n_layers: int, where: str) -> None:
    if attention_bias is None or isinstance(attention_bias, Tensor) or callable(attention_bias):
        return
    if not isinstance(attention_bias, (list, tuple)):
        raise ConfigError(
            f"{where}: attention_bias must be a tensor, a list with one tensor (or None) per "
            f"layer, or a function layer_index -> tensor; got {type(attention_bias).__name__}"
        )
    if len(attention_bias) != n_layers:
        raise ShapeError(
            f"{where}: attention_bias as a list needs one entry per layer ({n_layers}), got "
            f"{len(attention_bias)}; use None for layers without a bias"
        )


class _Stack(nn.Module):
    """Blocks, an optional final norm and the rotary angles they share."""

    causal: ClassVar[bool] = False

    def __init__(self, config: TransformerConfig, block_fn: BlockFn = Block) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(block_fn(config, i) for i in range(config.n_layers))
        self.final_norm: nn.Module = nn.Identity()
        if config.uses_final_norm:
            self.final_norm = build_norm(config.norm, config.d_model, config.norm_eps)
        self.rotary: RotaryEmbedding | None = None
        if config.rotary is not None:
            self.rotary = RotaryEmbedding(config.attention_head_dim, config.rotary)

    def _run(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None,
        position_ids: Tensor | None,
        caches: list[LayerCache] | None,
        encoder_states: Tensor | None,
        encoder_padding_mask: Tensor | None,
        attention_bias: AttentionBias = None,
        score_mod: Any = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        layer_kwargs: dict[str, Any] | None = None,
    ) -> StackOutput:
        where = type(self).__name__
        if x.dim() != 3 or x.shape[-1] != self.config.d_model:
            raise ShapeError(
                f"{where}: input must be (batch, length, d_model={self.config.d_model}), got {tuple(x.shape)}"
            )
        b, n, _ = x.shape
        past = cache_length(caches)
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (b, past + n):
            cached = f" (with caches: {past} cached + {n} new)" if caches else ""
            raise ShapeError(
                f"{where}: key_padding_mask must be (batch, keys) = {(b, past + n)}{cached}, got "
                f"{tuple(key_padding_mask.shape)}; True/1 marks real tokens"
            )
        if encoder_states is not None and (encoder_states.dim() != 3 or encoder_states.shape[0] != b):
            raise ShapeError(
                f"{where}: encoder_states must be (batch={b}, length, width), got "
                f"{tuple(encoder_states.shape)}"
            )
        if encoder_padding_mask is not None and encoder_states is not None and tuple(
            encoder_padding_mask.shape
        ) != (b, encoder_states.shape[1]):
            raise ShapeError(
                f"{where}: encoder_padding_mask must be (batch, encoder length) = "
                f"{(b, encoder_states.shape[1])}, got {tuple(encoder_padding_mask.shape)}; True/1 "
                "marks real tokens"
            )
        _check_attention_bias(attention_bias, len(self.layers), where)
        rotary = None
        if self.rotary is not None:
            if position_ids is None:
                position_ids = default_position_ids(b, n, past, x.device)
            elif position_ids.shape[-1] != n or position_ids.dim() not in (1, 2):
                raise ShapeError(
                    f"{where}: position_ids must be (batch, length) or (length,) with length {n}, "
                    f"got {tuple(position_ids.shape)}"
                )
            rotary = self.rotary(position_ids, x.dtype)
        # LayerDrop skips whole layers while training; never while decoding, where a skipped
        # layer's cache would miss the positions of this call.
        layer_drop = self.config.layer_drop if self.training and caches is None else 0.0
        hidden: list[Tensor] = [x]
        attentions: list[Tensor | None] = []
        cross: list[Tensor | None] = []
        for i, layer in enumerate(self.layers):
            if layer_drop > 0.0 and float(torch.rand(())) < layer_drop:
                attentions.append(None)
                cross.append(None)
                hidden.append(x)
                continue
            out = layer(
                x, causal=self.causal, key_padding_mask=key_padding_mask, rotary=rotary,
                cache=None if caches is None else caches[i],
                encoder_states=encoder_states, encoder_padding_mask=encoder_padding_mask,
                attention_bias=_bias_for_layer(attention_bias, i), score_mod=score_mod,
                output_attentions=output_attentions, **(layer_kwargs or {}),
            )
            if output_attentions:
                x, layer_attentions, layer_cross = out
                attentions.append(layer_attentions)
                cross.append(layer_cross)
            else:
                x = out
            hidden.append(x)
        has_cross = any(c is not None for c in cross)
        return StackOutput(
            last_hidden_state=self.final_norm(x),
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            cross_attentions=tuple(cross) if output_attentions and has_cross else None,
        )


class Encoder(_Stack):
    """Bidirectional stack (BERT, ViT, CLIP vision, wav2vec 2.0): every token sees every real token.

    ``Encoder(config, block_fn=Block)``: ``block_fn(config, layer_index)`` builds each layer (see
    :class:`Block` for the forward signature a layer must accept).
    """

    causal = False

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        encoder_states: Tensor | None = None,
        encoder_padding_mask: Tensor | None = None,
        *,
        attention_bias: AttentionBias = None,
        score_mod: Any = None,
    ) -> Tensor:
        """(B, N, d_model) -> (B, N, d_model).

        ``key_padding_mask`` (B, N), True = real token. ``position_ids`` only matter with rotary.
        ``encoder_states`` (B, M, width) are what cross-attention blocks attend to (e.g. the other
        modality in LXMERT), with ``encoder_padding_mask`` (B, M). ``attention_bias`` (see
        :data:`AttentionBias`) and ``score_mod`` reach every layer's self-attention mechanism.
        """
        return self.run(
            x, key_padding_mask, position_ids, encoder_states, encoder_padding_mask,
            attention_bias=attention_bias, score_mod=score_mod,
        ).last_hidden_state

    def run(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        encoder_states: Tensor | None = None,
        encoder_padding_mask: Tensor | None = None,
        *,
        attention_bias: AttentionBias = None,
        score_mod: Any = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        layer_kwargs: dict[str, Any] | None = None,
    ) -> StackOutput:
        """Like :meth:`forward`, returning a :class:`StackOutput` with the states asked for.

        ``layer_kwargs`` are passed to every layer as extra keywords: the inputs of a ``block_fn``
        layer that the protocol does not name (TimeSformer's blocks take ``num_frames``).
        """
        return self._run(
            x, key_padding_mask, position_ids, None, encoder_states, encoder_padding_mask,
            attention_bias, score_mod, output_hidden_states, output_attentions, layer_kwargs,
        )


class Decoder(_Stack):
    """Causal stack (GPT-2, GPT-J, iGPT, CLIP text) with incremental decoding through caches.

    Decoding contract: ``caches = decoder.new_caches()``; then call the decoder with only the new
    positions (one token or a chunk) and the same ``caches`` each time. The outputs equal those of
    one full forward over the whole sequence. ``key_padding_mask`` then covers every key so far,
    (B, cached + new); ``position_ids`` default to ``cached, cached+1, ...`` (pass them for
    left-padded batches). Cross-attention keys/values are computed from ``encoder_states`` on the
    first call and reused, so later calls may pass ``encoder_states=None``. ``block_fn`` as for
    :class:`Encoder`.
    """

    causal = True

    def new_caches(self) -> list[LayerCache]:
        """One fresh :class:`LayerCache` per block (each mechanism chooses its own state)."""
        return [layer.new_cache() for layer in self.layers]

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        caches: list[LayerCache] | None = None,
        encoder_states: Tensor | None = None,
        encoder_padding_mask: Tensor | None = None,
        *,
        attention_bias: AttentionBias = None,
        score_mod: Any = None,
    ) -> Tensor:
        """(B, N, d_model) -> (B, N, d_model), causal; see the class docstring for ``caches``."""
        return self.run(
            x, key_padding_mask, position_ids, caches, encoder_states, encoder_padding_mask,
            attention_bias=attention_bias, score_mod=score_mod,
        ).last_hidden_state

    def run(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        caches: list[LayerCache] | None = None,
        encoder_states: Tensor | None = None,
        encoder_padding_mask: Tensor | None = None,
        *,
        attention_bias: AttentionBias = None,
        score_mod: Any = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> StackOutput:
        """Like :meth:`forward`, returning a :class:`StackOutput` with the states asked for.

        With caches, ``attention_bias`` covers every key so far: (…, new, cached + new).
        """
        if caches is not None and len(caches) != len(self.layers):
            raise ShapeError(
                f"Decoder: got {len(caches)} caches for {len(self.layers)} layers; use decoder.new_caches()"
            )
        return self._run(
            x, key_padding_mask, position_ids, caches, encoder_states, encoder_padding_mask,
            attention_bias, score_mod, output_hidden_states, output_attentions,
        )
