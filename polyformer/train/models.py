"""What the trainer trains: a model named by a spec, so that another process can rebuild it.

A :class:`ModelSpec` names a *family* and its config dict. The family registry
(:data:`FAMILIES`, one :func:`register_family` per family) says for each name

* how to build the model from the config dict and the size the data decides (the vocabulary of a
  token corpus, the number of classes of a labelled set);
* which task it trains on (:mod:`polyformer.train.tasks`: ``next-token``, ``classification`` ...);
* how a sweep's ladder size (``n_layers x d_model x n_heads``) becomes config fields;
* how its parameters split into embeddings and the rest (Kaplan et al.'s non-embedding N), and
  what one example counts as in tokens (a ViT's patches + class token).

Registered (:mod:`polyformer.train.families`): ``gpt``, ``igpt``, ``vit``, ``bert``, ``clip``, ``timesformer``,
``tapas``.
``"package.module:function"`` names user code instead: a function called as
``function(config: dict, vocab_size: int) -> nn.Module`` that trains on ``next-token`` unless the
spec names another ``task``. torchrun workers, resumed runs and sweeps rebuild the model from the
spec saved beside the checkpoints.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from polyformer.errors import ConfigError

Builder = Callable[[dict[str, Any], "int | None"], nn.Module]


@dataclass
class ModelSpec:
    """A model family and its config (without the size the data decides, e.g. the vocabulary).

    ``task`` overrides the family's task (user families that are not language models);
    ``task_options`` are the task's options (``{"mask_token_id": 103}`` for ``masked-lm``).
    """

    family: str = "gpt"
    config: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    task_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.family, str) or not self.family:
            raise ConfigError(f"model family must be a name such as 'gpt' or 'module:function', got {self.family!r}")
        if not isinstance(self.config, dict):
            raise ConfigError(f"model config must be a mapping of field names to values, got {type(self.config).__name__}")
        if not isinstance(self.task_options, dict):
            raise ConfigError(f"task_options must be a mapping, got {type(self.task_options).__name__}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"family": self.family, "config": dict(self.config)}
        # Only when set: specs saved before tasks existed compare equal to today's.
        if self.task is not None:
            out["task"] = self.task
        if self.task_options:
            out["task_options"] = dict(self.task_options)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelSpec":
        return cls(family=values.get("family", "gpt"), config=dict(values.get("config", {})),
                   task=values.get("task"), task_options=dict(values.get("task_options", {})))

    @property
    def task_name(self) -> str:
        """The task this model trains on: the spec's own, else its family's."""
        return self.task or family_of(self.family).task


@dataclass(frozen=True)
class Family:
    """How the trainer and sweeps handle one model family (see the module docstring)."""

    name: str
    build: Builder
    task: str
    description: str = ""
    #: a ladder size -> config fields (default: n_layers, d_model, n_heads)
    size_config: Callable[[int, int, int], dict[str, Any]] | None = None
    #: (all parameters, non-embedding parameters); default: nn.Embedding tables are embeddings
    count: Callable[[nn.Module], tuple[int, int]] | None = None
    #: tokens one example stands for (None: the data or the task says)
    tokens_per_example: Callable[[nn.Module], int] | None = None
    #: parameters AdamW does not decay although they are matrices (a ViT's position table)
    no_decay: tuple[str, ...] = ()
    #: config fields the training sequence length decides (GPT: a position table of seq_len)
    seq_len_config: Callable[[int], dict[str, Any]] | None = None

    def config_for_size(self, n_layers: int, d_model: int, n_heads: int) -> dict[str, Any]:
        if self.size_config is not None:
            return self.size_config(n_layers, d_model, n_heads)
        return {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads}


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Make ``family`` trainable by name (replacing an earlier registration of the same name)."""
    FAMILIES[family.name] = family
    return family


def family_of(name: str) -> Family:
    """The registered family ``name``, or a user family ``module:function`` (next-token by default)."""
    if name in FAMILIES:
        return FAMILIES[name]
    module_name, _, function_name = name.partition(":")
    if not function_name:
        raise ConfigError(f"unknown model family {name!r}; known families: {', '.join(sorted(FAMILIES))}, "
                          "or 'package.module:function' for your own")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"model factory {name!r} cannot be imported ({error})") from None
    return Family(name=name, build=factory, task="next-token", description="user code")


def config_defaults(family: str, seq_len: int) -> dict[str, Any]:
    """Config fields that training with sequences of ``seq_len`` tokens implies for ``family``."""
    entry = FAMILIES.get(family)
    return {} if entry is None or entry.seq_len_config is None else dict(entry.seq_len_config(seq_len))


def build_model(spec: ModelSpec, vocab_size: int | None) -> nn.Module:
    """A freshly initialised model (uses torch's global generator: seed before calling).

    ``vocab_size``: the size the data decides — the vocabulary for token tasks, the number of
    classes for classification (None when the config already says).
    """
    family = family_of(spec.family)
    return family.build(dict(spec.config), vocab_size)


def count_parameters(model: nn.Module, family: str | None = None) -> tuple[int, int]:
    """(all parameters, parameters outside embedding tables), each shared tensor counted once.

    A registered family's own count comes first; then the model's ``num_parameters(exclude_embeddings=...)``
    (the GPT family has one, and counts learned position tables as embeddings as Kaplan et al. do);
    else ``nn.Embedding`` tables are the embeddings.
    """
    if family is not None and family in FAMILIES and FAMILIES[family].count is not None:
        return FAMILIES[family].count(model)
    if hasattr(model, "num_parameters"):
        return int(model.num_parameters(exclude_embeddings=False)), int(model.num_parameters(exclude_embeddings=True))
    unique = {id(p): p for p in model.parameters()}
    embedding = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)}
    total = sum(p.numel() for p in unique.values())
    return total, total - sum(unique[i].numel() for i in embedding if i in unique)


def count_by_prefix(model: nn.Module, prefixes: tuple[str, ...]) -> tuple[int, int]:
    """(all, all but parameters whose name starts with one of ``prefixes``), shared tensors once."""
    seen: set[int] = set()
    total = embedding = 0
    for name, parameter in model.named_parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        if name.startswith(prefixes):
            embedding += parameter.numel()
    return total, total - embedding


def no_decay_names(spec: ModelSpec | None) -> tuple[str, ...]:
    """Matrices of ``spec``'s family that weight decay leaves alone (none for user families)."""
    family = None if spec is None else FAMILIES.get(spec.family)
    return () if family is None else tuple(family.no_decay)


def tokens_per_example(spec: ModelSpec, model: nn.Module) -> int | None:
    """What one example of ``spec``'s family counts as in tokens (None: its data or task decides)."""
    family = FAMILIES.get(spec.family)
    if family is None or family.tokens_per_example is None:
        return None
    return int(family.tokens_per_example(model))


# The registrations (gpt, igpt, vit, bert) load with the registry, so that looking a family up
# never depends on what else was imported first.
importlib.import_module("polyformer.train.families")
