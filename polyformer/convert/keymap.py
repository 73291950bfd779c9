"""One literal key map per checkpoint family, used in both directions.

A :class:`Rule` pairs one Hugging Face key pattern with one or more polyformer keys; ``{}`` stands
for a layer index. A rule may carry a transform (GPT-2's fused, transposed ``c_attn`` becomes three
``nn.Linear`` weights) and its inverse, so that ``save_pretrained`` writes checkpoints that
Hugging Face loads again.

    KeyMap([
        Rule("h.{}.attn.c_attn.weight", ("decoder.layers.{}.attn.q_proj.weight", ...),
             *split_rows(3, transposed=True)),
        Rule("h.{}.ln_1.weight", "decoder.layers.{}.attn_norm.weight"),
    ], ignore=("h.{}.attn.bias",), hf_prefixes=("transformer.", ""))
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from polyformer.errors import CheckpointError

ToOurs = Callable[[Tensor], Sequence[Tensor]]
ToHF = Callable[[Sequence[Tensor]], Tensor]


def transpose() -> tuple[ToOurs, ToHF]:
    """Conv1D (in, out) <-> Linear (out, in)."""
    return (lambda t: (t.t().contiguous(),)), (lambda ts: ts[0].t().contiguous())


def split_rows(parts: int, transposed: bool = False) -> tuple[ToOurs, ToHF]:
    """One fused tensor <-> ``parts`` equal pieces along the output dimension."""

    def to_ours(t: Tensor) -> Sequence[Tensor]:
        if transposed:  # Conv1D weight (in, parts * out)
            return [p.t().contiguous() for p in t.chunk(parts, dim=-1)]
        return [p.contiguous() for p in t.chunk(parts, dim=0)]

    def to_hf(ts: Sequence[Tensor]) -> Tensor:
        if transposed:
            return torch.cat([p.t() for p in ts], dim=-1).contiguous()
        return torch.cat(list(ts), dim=0).contiguous()

    return to_ours, to_hf


@dataclass(frozen=True)
class Rule:
    """``hf`` key pattern <-> ``ours`` key pattern(s), with optional transforms."""

    hf: str
    ours: str | tuple[str, ...]
    to_ours: ToOurs | None = None
    to_hf: ToHF | None = None
    #: False for keys outside the base model (e.g. ``lm_head.weight``): saved without the prefix
    prefixed: bool = True

    @property
    def our_keys(self) -> tuple[str, ...]:
        return (self.ours,) if isinstance(self.ours, str) else self.ours


def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(pattern).replace(r"\{\}", r"(\d+)") + "$")


@dataclass
class KeyMap:
    """Rules of one family; ``ignore`` lists HF keys that carry no weights (e.g. causal-mask buffers)."""

    rules: list[Rule]
    ignore: Sequence[str] = ()
    #: prefixes a checkpoint's keys may carry (e.g. "transformer." for *LMHeadModel); stripped on load
    hf_prefixes: Sequence[str] = ("",)
    _compiled: list[tuple[re.Pattern[str], Rule]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._compiled = [(_regex(r.hf), r) for r in self.rules]
        self._ignored = [_regex(p) for p in self.ignore]

    # -- Hugging Face -> polyformer ----------------------------------------------------------------
    def to_ours(self, hf_state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """Convert a HF state dict; returns (our state dict, HF keys no rule matched)."""
        ours: dict[str, Tensor] = {}
        unexpected: list[str] = []
        for key, tensor in hf_state.items():
            stripped = self._strip(key)
            if stripped is None:
                continue  # an ignored key
            for regex, rule in self._compiled:
                match = regex.match(stripped)
                if match is None:
                    continue
                tensors = rule.to_ours(tensor) if rule.to_ours else (tensor,)
                for pattern, value in zip(rule.our_keys, tensors):
                    ours[_fill(pattern, match.groups())] = value
                break
            else:
                unexpected.append(key)
        return ours, unexpected

    def _strip(self, key: str) -> str | None:
        """The key without a known prefix; None for keys that are ignored."""
        for prefix in sorted(self.hf_prefixes, key=len, reverse=True):
            if key.startswith(prefix):
                candidate = key[len(prefix):]
                if any(r.match(candidate) for r in self._ignored):
                    return None
                if any(r.match(candidate) for r, _ in self._compiled):
                    return candidate
        return key

    # -- polyformer -> Hugging Face ----------------------------------------------------------------
    def to_hf(self, our_state: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
        """Convert our state dict back to HF names (every key must be covered by a rule)."""
        out: dict[str, Tensor] = {}
        used: set[str] = set()
        for _, rule in self._compiled:
            first = _regex(rule.our_keys[0])
            for key in our_state:
                match = first.match(key)
                if match is None:
                    continue
                keys = [_fill(p, match.groups()) for p in rule.our_keys]
                tensors = [our_state[k] for k in keys]
                used.update(keys)
                hf_key = _fill(rule.hf, match.groups())
                if rule.prefixed and not hf_key.startswith(prefix):
                    hf_key = prefix + hf_key
                out[hf_key] = (
                    rule.to_hf(tensors) if rule.to_hf else tensors[0]
                )
        missing = sorted(set(our_state) - used)
        if missing:
            raise CheckpointError(f"no key-map rule covers these weights: {', '.join(missing[:10])}")
        return out


def _fill(pattern: str, groups: Sequence[str]) -> str:
    for g in groups:
        pattern = pattern.replace("{}", g, 1)
    return pattern


def check_state_dict(
    model: torch.nn.Module, state: dict[str, Tensor], unexpected: list[str], source: str
) -> None:
    """Raise a CheckpointError naming missing, unexpected and mis-shaped weights."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(unexpected) | (set(state) - set(expected)))
    misshaped = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing weights: {', '.join(missing[:12])}{' …' if len(missing) > 12 else ''}")
    if unexpected:
        problems.append(f"unexpected weights: {', '.join(unexpected[:12])}{' …' if len(unexpected) > 12 else ''}")
    if misshaped:
        problems.append(f"mis-shaped weights: {', '.join(misshaped[:12])}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the model ({'; '.join(problems)}); check that config.json "
            "belongs to these weights"
        )
