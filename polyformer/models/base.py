"""The family template: what every model family shares, so a family file holds only what is new.

A family declares

* a config dataclass deriving from :class:`FamilyConfig`, with ``hf_names`` (our field -> its
  Hugging Face ``config.json`` key), ``own_fields`` (polyformer settings kept under the
  ``"polyformer"`` key, which Hugging Face ignores) and, only for what a table cannot say, the
  hooks :meth:`FamilyConfig.extra_from_hf` / :meth:`FamilyConfig.extra_to_hf`;
* model classes deriving from :class:`PretrainedModel`, each with its Hugging Face
  ``model_type`` and ``architectures`` and its literal :class:`~polyformer.convert.KeyMap`.

The template then does ``config.json`` both ways, strict loading (every missing, unexpected or
mis-shaped weight named; a head whose rows disagree with ``id2label`` named as such), atomic saving
through one writer (with the processor, when given, so the folder goes straight into a pipeline),
Hugging Face's weight initialisation, parameter counting, and ``dtype`` / attention overrides.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from polyformer.attention import AttentionSpec
from polyformer.convert.checkpoint import load_state_dict, read_config, save_state_dict
from polyformer.convert.keymap import KeyMap, check_state_dict
from polyformer.errors import CheckpointError, ConfigError
from polyformer.files import atomic_write_text
from polyformer.layers import LearnedPositions, RMSNorm
from polyformer.models._labels import check_head_rows, labels_to_hf, parse_id2label, resolve_labels
from polyformer.models.heads import PROBLEM_TYPES
from polyformer.options import require
from polyformer.transformer import StackOutput

__all__ = [
    "ENCODER_HF_NAMES", "POLYFORMER_KEY", "EncoderConfig", "FamilyConfig", "PretrainedModel", "final_normed_states", "init_weights", "write_hf_folder",
]

#: config.json key under which polyformer keeps its own settings (Hugging Face ignores it)
POLYFORMER_KEY = "polyformer"


# ------------------------------------------------------------------------------------------------
# Configs
# ------------------------------------------------------------------------------------------------
class FamilyConfig:
    """Base of family config dataclasses: the Hugging Face ``config.json`` both ways, from a table.

    Class attributes a family sets:

    * ``model_types`` — the ``model_type`` values it reads (the first is written, unless
      :meth:`hf_model_type` says otherwise);
    * ``hf_names`` — ``{our_field: hf_key}``; a tuple of keys lists older spellings that are read
      too (the first is written);
    * ``hf_constants`` — keys written with fixed values (e.g. a dropout polyformer does not use);
    * ``hf_required`` — our fields whose keys ``config.json`` must have (no default is assumed);
    * ``own_fields`` — fields kept under ``"polyformer"`` when they differ from their defaults;
    * ``has_labels`` — the config carries ``id2label`` / ``num_labels`` / ``problem_type``.

    A config that has labels declares the fields ``num_labels``, ``id2label`` and ``problem_type``
    and calls :meth:`resolve_label_fields` in ``__post_init__``.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    hf_names: ClassVar[Mapping[str, str | tuple[str, ...]]] = {}
    hf_constants: ClassVar[Mapping[str, Any]] = {}
    hf_required: ClassVar[tuple[str, ...]] = ()
    own_fields: ClassVar[tuple[str, ...]] = ("attention",)
    has_labels: ClassVar[bool] = False

    # -- hooks a family may override ----------------------------------------------------------------
    @classmethod
    def names_for(cls, model_type: str) -> Mapping[str, str | tuple[str, ...]]:
        """The ``hf_names`` table for ``model_type`` (families whose variants name keys differently override)."""
        return cls.hf_names

    @classmethod
    def extra_from_hf(cls, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """Constructor arguments the table cannot express (derived or converted values)."""
        return {}

    def extra_to_hf(self) -> dict[str, Any]:
        """``config.json`` entries the table cannot express."""
        return {}

    def hf_model_type(self) -> str:
        """The ``model_type`` written to ``config.json``."""
        return self.model_types[0]

    # -- config.json -> config -------------------------------------------------------------------
    @classmethod
    def from_hf(cls, raw: dict[str, Any], where: str = "config.json"):
        """The config described by a Hugging Face ``config.json`` dict; errors name the file."""
        model_type = raw.get("model_type")
        if model_type not in cls.model_types:
            raise CheckpointError(
                f"{where}: model_type {model_type!r} is not one this config reads "
                f"({', '.join(cls.model_types)}); load the folder with polyformer.from_pretrained to pick "
                "the family from config.json"
            )
        values: dict[str, Any] = {}
        for ours, theirs in cls.names_for(model_type).items():
            keys = (theirs,) if isinstance(theirs, str) else theirs
            for key in keys:
                if raw.get(key) is not None:
                    values[ours] = raw[key]
                    break
            else:
                if ours in cls.hf_required:
                    raise CheckpointError(f"{where}: a {model_type} config is missing {keys[0]!r}")
        own = raw.get(POLYFORMER_KEY) or {}
        if not isinstance(own, dict):
            raise CheckpointError(f"{where}: the {POLYFORMER_KEY!r} entry must be a mapping, got {own!r}")
        unknown = sorted(set(own) - set(cls.own_fields))
        if unknown:
            raise CheckpointError(
                f"{where}: unknown {POLYFORMER_KEY!r} setting(s) {unknown}; this family keeps "
                f"{', '.join(cls.own_fields) or 'none'} there"
            )
        values.update({k: v for k, v in own.items() if v is not None})
        if cls.has_labels:
            values["id2label"] = parse_id2label(raw, where)
            values["num_labels"] = None if values["id2label"] else raw.get("num_labels")
            values["problem_type"] = raw.get("problem_type")
        try:
            values.update(cls.extra_from_hf(raw, where))
            return cls(**values)
        except ConfigError as error:
            raise CheckpointError(f"{where}: {error}") from None
        except TypeError as error:  # a family hook passed a field the dataclass lacks
            raise CheckpointError(f"{where}: {error}") from None

    # -- config -> config.json -------------------------------------------------------------------
    def to_hf(self, architecture: str | None = None) -> dict[str, Any]:
        """A Hugging Face ``config.json`` dict (``architectures`` = [architecture] when given)."""
        out: dict[str, Any] = {"model_type": self.hf_model_type()}
        if architecture is not None:
            out["architectures"] = [architecture]
        for ours, theirs in self.names_for(out["model_type"]).items():
            out[theirs if isinstance(theirs, str) else theirs[0]] = _json_value(getattr(self, ours))
        out.update(self.hf_constants)
        if self.has_labels:
            out.update(labels_to_hf(self.id2label or {}))  # type: ignore[attr-defined]
            if self.problem_type is not None:  # type: ignore[attr-defined]
                out["problem_type"] = self.problem_type  # type: ignore[attr-defined]
        own = self._own_settings()
        if own:
            out[POLYFORMER_KEY] = own
        out.update(self.extra_to_hf())
        return out

    def _own_settings(self) -> dict[str, Any]:
        defaults = {f.name: f for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        out = {}
        for name in self.own_fields:
            value, spec = getattr(self, name), defaults[name]
            default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
            if value is not None and value != default:
                out[name] = _json_value(value)
        return out

    # -- shared behaviour --------------------------------------------------------------------------
    def with_attention(self, attention: AttentionSpec | str | dict):
        """A copy whose every layer uses ``attention`` (a name, spec or ``{"name", "options"}``)."""
        return dataclasses.replace(self, attention=AttentionSpec.coerce(attention))  # type: ignore[type-var]

    def resolve_label_fields(self) -> None:
        """Make ``id2label`` / ``num_labels`` one consistent map and check ``problem_type``."""
        where = type(self).__name__
        self.id2label = resolve_labels(self.num_labels, self.id2label, where)  # type: ignore[attr-defined]
        self.num_labels = len(self.id2label)
        require(self.problem_type is None or self.problem_type in PROBLEM_TYPES,  # type: ignore[attr-defined]
                f"{where}.problem_type must be null or one of {', '.join(PROBLEM_TYPES)}, got {self.problem_type!r}")  # type: ignore[attr-defined]

    def check_positive(self, *names: str) -> None:
        """Each named field must be a positive integer; the error names the config and field."""
        for name in names:
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                    f"{type(self).__name__}.{name} must be a positive integer, got {value!r}")


#: Hugging Face's names of the fields every BERT-style encoder config has (BERT, ViT, CLIP's towers,
#: TAPAS, LayoutLM, wav2vec 2.0, TimeSformer, ...)
ENCODER_HF_NAMES: dict[str, str] = {
    "d_model": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
    "d_ff": "intermediate_size", "activation": "hidden_act", "norm_eps": "layer_norm_eps",
    "dropout": "hidden_dropout_prob", "initializer_range": "initializer_range",
}


@dataclass
class EncoderConfig(FamilyConfig):
    """The sizes, switches and label fields of an encoder family, with BERT-base / ViT-B/16 defaults.

    ``d_model`` (HF ``hidden_size``), ``n_layers``, ``n_heads``, ``d_ff`` (MLP width), ``activation``,
    ``norm_eps``, ``dropout``, ``attention`` (the mechanism of every layer: a name, spec or
    ``{"name", "options"}``), ``initializer_range``; a classification head's ``num_labels`` /
    ``id2label`` (either one) and ``problem_type`` (None = decided by the labels, as Hugging Face
    does). A family adds its own fields after these and calls :meth:`check_encoder` in
    ``__post_init__``.
    """

    hf_names: ClassVar[Mapping[str, str | tuple[str, ...]]] = ENCODER_HF_NAMES
    has_labels: ClassVar[bool] = True

    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    d_ff: int = 3072
    activation: str = "gelu"
    norm_eps: float = 1e-12
    dropout: float = 0.0
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    initializer_range: float = 0.02
    num_labels: int | None = None
    id2label: dict[int, str] | None = None
    problem_type: str | None = None

    def check_encoder(self) -> None:
        """Coerce ``attention``, resolve the labels, check the sizes (``d_model`` divisible by ``n_heads``)."""
        self.attention = AttentionSpec.coerce(self.attention)
        self.resolve_label_fields()
        self.check_positive("d_model", "n_layers", "n_heads", "d_ff")
        require(self.d_model % self.n_heads == 0,
                f"{type(self).__name__}.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")


def _json_value(value: Any) -> Any:
    """Config values as JSON: attention specs as ``{"name", "options"}``, tuples as lists."""
    if isinstance(value, AttentionSpec):
        return {"name": value.name, "options": dict(value.options)}
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------
# Weights
# ------------------------------------------------------------------------------------------------
def init_weights(model: nn.Module, std: float, *, truncated: bool = False, residual_layers: int | None = None) -> None:
    """Hugging Face's initialisation: N(0, std) (truncated for ViT) for linear, convolution and
    embedding weights, zero biases, unit norms.

    ``residual_layers`` scales the output projections of residual branches (``attn.out_proj``,
    ``mlp.fc_out``) by 1/sqrt(2·layers), as GPT-2 does, so the residual stream does not grow with depth.
    """
    draw = nn.init.trunc_normal_ if truncated else nn.init.normal_
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, LearnedPositions)):
            scale = 1.0
            if residual_layers and name.endswith(("attn.out_proj", "mlp.fc_out")):
                scale = 1 / math.sqrt(2 * residual_layers)
            draw(module.weight, std=std * scale)
            bias = getattr(module, "bias", None)
            if isinstance(bias, Tensor):
                nn.init.zeros_(bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm, RMSNorm)):
            if getattr(module, "weight", None) is not None:
                nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


def final_normed_states(out: StackOutput) -> tuple[Tensor, ...] | None:
    """GPT-2's ``hidden_states``: the last entry is the final norm's output, not the last block's."""
    if out.hidden_states is None:
        return None
    return out.hidden_states[:-1] + (out.last_hidden_state,)


def write_hf_folder(path: str | Path, hf_config: dict[str, Any], hf_state: dict[str, Tensor]) -> Path:
    """``config.json`` + ``model.safetensors`` in ``path``, each written atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_state_dict(hf_state, path / "model.safetensors")
    atomic_write_text(path / "config.json", json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return path


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------
class PretrainedModel(nn.Module):
    """Base class of model families that load and save Hugging Face checkpoint folders.

    A subclass sets ``model_type``, ``architectures`` (the first is written on save),
    ``config_class`` and :meth:`key_map`; optionally ``hf_save_prefix`` (the prefix Hugging Face's
    class puts before the base model's keys), ``head_weight`` (the classifier weight whose rows
    must match ``id2label``), ``tied_weights`` (``{ours: source}`` weights a checkpoint omits),
    :meth:`build_options` (constructor options read from the checkpoint, e.g. whether it has a
    pooler) and :meth:`reset_parameters` (its initialisation).
    """

    model_type: ClassVar[str] = ""
    architectures: ClassVar[tuple[str, ...]] = ()
    config_class: ClassVar[type]
    hf_save_prefix: ClassVar[str] = ""
    head_weight: ClassVar[str | None] = None
    tied_weights: ClassVar[Mapping[str, str]] = {}

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def key_map(cls, config: Any, **options: Any) -> KeyMap:
        """The literal key map between this family's Hugging Face names and ours."""
        raise NotImplementedError(f"{cls.__name__} must define key_map(config)")

    @property
    def id2label(self) -> dict[int, str]:
        """Class names of the head (from ``config.json``'s ``id2label``)."""
        labels = getattr(self.config, "id2label", None)
        if labels is None:
            raise ConfigError(f"{type(self).__name__} has no classification head, so no id2label")
        return dict(labels)

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def build_options(cls, hf_state: dict[str, Tensor]) -> dict[str, Any]:
        """Constructor options the checkpoint decides (default: none)."""
        return {}

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        attention: AttentionSpec | str | dict | None = None,
        dtype: torch.dtype | None = None,
        **options: Any,
    ):
        """Load a Hugging Face folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).

        ``attention`` swaps the attention mechanism of every layer (e.g. ``"sliding_window"``);
        ``dtype`` casts the loaded weights; other ``options`` go to the constructor (and override
        what the checkpoint decides, e.g. ``add_pooling_layer=False``).
        """
        config = cls.config_class.from_hf(read_config(path), str(Path(path) / "config.json"))
        if attention is not None:
            config = config.with_attention(attention)
        return cls.from_config_and_weights(config, path, dtype=dtype, **options)

    @classmethod
    def from_config_and_weights(cls, config: Any, path: str | Path, *, dtype: torch.dtype | None = None,
                                **options: Any):
        """Build ``cls(config)`` and load the weights in folder ``path`` into it, strictly."""
        hf_state, source = load_state_dict(path)
        options = {**cls.build_options(hf_state), **options}
        model = cls(config, **options)
        model.load_hf_state_dict(hf_state, str(source), **options)
        if dtype is not None:
            model = model.to(dtype)
        return model.eval()

    def load_hf_state_dict(self, hf_state: dict[str, Tensor], source: str = "the state dict", **options: Any) -> None:
        """Load Hugging Face-named weights (e.g. a live ``transformers`` model's ``state_dict()``),
        strictly: every missing, unexpected or mis-shaped weight is named, as is a label map that
        does not fit the head. ``options`` are the key map's (those the model was built with)."""
        state, unexpected = self.key_map(self.config, **options).to_ours(hf_state)
        for ours, tied_to in self.tied_weights.items():
            # Hugging Face leaves a tied weight out of the file; it is the weight it is tied to.
            if ours not in state and tied_to in state and self.is_tied(ours, tied_to):
                state[ours] = state[tied_to]
        if self.head_weight is not None and self.head_weight in state:
            # A label map that does not fit the head is named as such, not as a mis-shaped weight.
            check_head_rows(state[self.head_weight].shape[0], self.config.id2label, self.head_weight, source)
        check_state_dict(self, state, unexpected, source)
        self.load_state_dict(state, strict=True)

    # -- saving ----------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, processor: Any = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` in Hugging Face's format, atomically.

        With ``processor`` (a tokenizer, image processor, ...), its files are written beside the
        model, so ``pipeline(task, model=path)`` takes the folder as it is.
        """
        hf_state = self.key_map(self.config, **self.save_options()).to_hf(
            self.state_dict_for_saving(), prefix=self.hf_save_prefix
        )
        folder = write_hf_folder(path, self.config.to_hf(self.hf_architecture()), hf_state)
        if processor is not None:
            processor.save_pretrained(folder)
        return folder

    def hf_architecture(self) -> str:
        """The Hugging Face class name written to ``config.json`` (default: the first of ``architectures``)."""
        return self.architectures[0]

    def save_options(self) -> dict[str, Any]:
        """The constructor options :meth:`key_map` needs when saving (default: none)."""
        return {}

    def state_dict_for_saving(self) -> dict[str, Tensor]:
        """The state dict without tied copies, which Hugging Face does not store."""
        state = self.state_dict()
        for ours, source in self.tied_weights.items():
            if self.is_tied(ours, source):
                state.pop(ours)
        return state

    def is_tied(self, name: str, source: str) -> bool:
        """Whether parameter ``name`` is parameter ``source`` (weight tying is a per-config choice)."""
        try:
            return self.get_parameter(name) is self.get_parameter(source)
        except AttributeError:
            return False

    # -- sizes -----------------------------------------------------------------------------------
    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameters counted once (tied weights once); optionally without token and position
        tables (Kaplan et al.'s N, which scaling laws are fitted against)."""
        skip: set[int] = set()
        if exclude_embeddings:
            for module in self.modules():
                if isinstance(module, (nn.Embedding, LearnedPositions)):
                    skip.update(id(p) for p in module.parameters(recurse=False))
            skip.update(id(p) for name, p in self.named_parameters() if name.endswith("position_embeddings"))
        seen: set[int] = set()
        total = 0
        for p in self.parameters():
            if id(p) in seen or id(p) in skip:
                continue
            seen.add(id(p))
            total += p.numel()
        return total
