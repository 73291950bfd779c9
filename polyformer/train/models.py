"""What the trainer trains: a model named by a spec, so that another process can rebuild it.

A model is any ``nn.Module`` whose ``forward(input_ids=..., labels=...)`` returns an object with a
scalar ``.loss`` (the next-token loss, shifted inside the model as Hugging Face models do).

A :class:`ModelSpec` names a family and its config: ``"gpt"`` (polyformer's GPT family, with the
config fields of ``GPTConfig``) or ``"package.module:function"``, a function called as
``function(config: dict, vocab_size: int) -> nn.Module``. torchrun workers, resumed runs and
sweeps rebuild the model from the spec saved beside the checkpoints.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from polyformer.errors import ConfigError


@dataclass
class ModelSpec:
    """A model family and its config (without the vocabulary size, which the data decides)."""

    family: str = "gpt"
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.family, str) or not self.family:
            raise ConfigError(f"model family must be a name such as 'gpt' or 'module:function', got {self.family!r}")
        if not isinstance(self.config, dict):
            raise ConfigError(f"model config must be a mapping of field names to values, got {type(self.config).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "config": dict(self.config)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelSpec":
        return cls(family=values.get("family", "gpt"), config=dict(values.get("config", {})))


def _build_gpt(config: dict[str, Any], vocab_size: int) -> nn.Module:
    try:
        from polyformer.models.gpt import GPTConfig, GPTLMHeadModel
    except ImportError as error:
        raise ConfigError(f"the GPT family is not available in this installation ({error})") from None
    try:
        gpt_config = GPTConfig(**{**config, "vocab_size": vocab_size})
    except TypeError as error:
        raise ConfigError(f"model config for 'gpt': {error}") from None
    return GPTLMHeadModel(gpt_config)


FAMILIES: dict[str, Callable[[dict[str, Any], int], nn.Module]] = {"gpt": _build_gpt}


def build_model(spec: ModelSpec, vocab_size: int) -> nn.Module:
    """A freshly initialised model (uses torch's global generator: seed before calling)."""
    if spec.family in FAMILIES:
        return FAMILIES[spec.family](spec.config, vocab_size)
    module_name, _, function_name = spec.family.partition(":")
    if not function_name:
        raise ConfigError(f"unknown model family {spec.family!r}; use one of {sorted(FAMILIES)} or 'module:function'")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"model factory {spec.family!r} cannot be imported ({error})") from None
    return factory(dict(spec.config), vocab_size)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all parameters, parameters outside embedding tables), each shared tensor counted once.

    Uses the model's own ``num_parameters(exclude_embeddings=...)`` where it has one (the GPT
    family does, and counts learned position tables as embeddings as Kaplan et al. do).
    """
    if hasattr(model, "num_parameters"):
        return int(model.num_parameters(exclude_embeddings=False)), int(model.num_parameters(exclude_embeddings=True))
    unique = {id(p): p for p in model.parameters()}
    embedding = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)}
    total = sum(p.numel() for p in unique.values())
    return total, total - sum(unique[i].numel() for i in embedding if i in unique)
