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

``aliases`` are load-only rules for a second spelling of the same weights (saving writes the main
rules' spelling). Maps compose: a two-tower model maps each tower with its own literal map under a
prefix and merges them; two maps that claim the same key are refused::

    KeyMap.merge(
        text_map.with_prefix("text_model.", "tower_b."),
        vision_map.with_prefix("vision_model.", "tower_a."),
        KeyMap([Rule("logit_scale", "logit_scale")]),
    )
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from polyformer.errors import CheckpointError, ConfigError

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

    def with_prefix(self, hf_prefix: str, our_prefix: str) -> "Rule":
        """The same rule with ``hf_prefix`` / ``our_prefix`` before its keys."""
        ours = tuple(our_prefix + k for k in self.our_keys)
        return Rule(
            hf_prefix + self.hf, ours[0] if isinstance(self.ours, str) else ours,
            self.to_ours, self.to_hf, self.prefixed,
        )


def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(pattern).replace(r"\{\}", r"(\d+)") + "$")


@dataclass
class KeyMap:
    """Rules of one family; ``ignore`` lists HF keys that carry no weights (e.g. causal-mask buffers).

    ``aliases``: load-only rules for another spelling of the same weights (e.g. the module names
    of a newer ``transformers`` next to the on-disk names); keys no main rule matches are tried
    against them, and saving uses the main rules only, so a saved checkpoint has one spelling.
    """

    rules: list[Rule]
    ignore: Sequence[str] = ()
    #: prefixes a checkpoint's keys may carry (e.g. "transformer." for *LMHeadModel); stripped on load
    hf_prefixes: Sequence[str] = ("",)
    aliases: Sequence[Rule] = ()
    _compiled: list[tuple[re.Pattern[str], Rule]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rules = list(self.rules)
        self.aliases = tuple(self.aliases)
        self._compiled = [(_regex(r.hf), r) for r in self.rules]
        self._ignored = [_regex(p) for p in self.ignore]
        self._alias_map = (
            KeyMap(list(self.aliases), ignore=self.ignore, hf_prefixes=self.hf_prefixes)
            if self.aliases else None
        )

    # -- composition --------------------------------------------------------------------------------
    def with_prefix(self, hf_prefix: str, our_prefix: str) -> "KeyMap":
        """This map with every key under ``hf_prefix`` (theirs) and ``our_prefix`` (ours).

        The result accepts no other checkpoint prefix (``hf_prefixes`` belong to the whole
        checkpoint: give them to :meth:`merge`).
        """
        return KeyMap(
            [r.with_prefix(hf_prefix, our_prefix) for r in self.rules],
            ignore=tuple(hf_prefix + p for p in self.ignore),
            aliases=tuple(r.with_prefix(hf_prefix, our_prefix) for r in self.aliases),
        )

    @staticmethod
    def merge(*maps: "KeyMap", hf_prefixes: Sequence[str] = ("",)) -> "KeyMap":
        """One map holding the rules of ``maps``; ConfigError if two of them claim the same key.

        A key is claimed twice when a Hugging Face key (or one of ours) matches rules of two maps,
        e.g. two towers merged without :meth:`with_prefix`.
        """
        if not maps:
            raise ConfigError("KeyMap.merge needs at least one key map")
        _check_disjoint(maps)
        return KeyMap(
            [r for m in maps for r in m.rules],
            ignore=tuple(p for m in maps for p in m.ignore),
            hf_prefixes=hf_prefixes,
            aliases=tuple(r for m in maps for r in m.aliases),
        )

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
        if unexpected and self._alias_map is not None:
            extra, unexpected = self._alias_map.to_ours({k: hf_state[k] for k in unexpected})
            ours.update(extra)
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


def _example(pattern: str) -> str:
    """A concrete key of ``pattern`` (layer 0), to test whether another pattern claims it."""
    return pattern.replace("{}", "0")


def _check_disjoint(maps: Sequence[KeyMap]) -> None:
    """Raise ConfigError if two maps have rules for one HF key or one of our keys."""
    sides = (
        ("Hugging Face", lambda m: [(r.hf, r) for r in [*m.rules, *m.aliases]]),
        ("polyformer", lambda m: [(k, r) for r in m.rules for k in r.our_keys]),
    )
    for side, patterns_of in sides:
        claimed = [[(_regex(p), p, _example(p)) for p, _ in patterns_of(m)] for m in maps]
        for i in range(len(maps)):
            for j in range(i + 1, len(maps)):
                for regex, mine, my_example in claimed[i]:
                    for other_regex, other, other_example in claimed[j]:
                        if regex.match(other_example) or other_regex.match(my_example):
                            raise ConfigError(
                                f"KeyMap.merge: maps {i} and {j} both claim the {side} key "
                                f"{other_example!r} ({mine!r} and {other!r}); put each map under "
                                "its own prefix with KeyMap.with_prefix"
                            )


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
