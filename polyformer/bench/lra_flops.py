"""FLOPs of one training step of an encoder, split into attention scores and everything else.

The split gives the *FLOP-bound* speed ratio of a mechanism against dense attention: with every
FLOP running at the same rate, a step can be at most ``total_dense / total_mechanism`` times
faster, because the projections, the MLP and the head cost the same under every mechanism.

Conventions (the same as ``torch.utils.flop_counter``): a multiply-add is 2 FLOPs and only matrix
products count (softmax, norms, activations and the optimizer are left out). A training step is
3× the forward pass: every product has two products in the backward pass (the gradients of both
operands). Attention is non-causal self-attention over the whole sequence (an encoder):

* softmax mechanisms over an allowed set of (query, key) pairs: ``QKᵀ`` and ``PV`` cost
  ``2·D`` each per pair, so ``4·D·pairs`` per head. Dense and ``memory_efficient``: ``pairs = N²``;
  pattern mechanisms (sliding window, Longformer, BigBird, ...): the pairs their pattern allows,
  counted from the pattern itself (not the tiles a kernel happens to compute);
* ``linear`` with F features (D for elu+1): ``Σ φ(k) [v, 1]ᵀ`` and ``φ(q)·S`` cost
  ``2·N·F·(Dv+1)`` each;
* ``performer`` with m features: the same with F = m, plus the random projections of queries and
  keys, ``2·N·D·m`` each;
* ``lsh``: per hashing round every query (the length padded to a multiple of the bucket size)
  meets its own and the previous chunk, ``2·bucket_size`` keys, plus the hash projections of
  queries and keys, ``2·N·D·w`` each for rotations of total width ``w``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import torch

from polyformer.attention import AttentionSpec, mechanism_class
from polyformer.errors import ConfigError
from polyformer.transformer import TransformerConfig

#: A training step (forward + backward) costs this many forward passes.
TRAINING_MULTIPLIER = 3


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step: ``attention`` (scores and their products) and ``other``."""

    attention: float
    other: float

    @property
    def total(self) -> float:
        """All FLOPs of the step."""
        return self.attention + self.other


def linear_flops_per_token(config: TransformerConfig) -> int:
    """Forward FLOPs of the per-token matrix products of the whole stack (q/k/v/out and MLP)."""
    inner = config.n_heads * config.attention_head_dim
    projections = 3 * config.d_model * inner + inner * config.d_model
    mlp = (3 if config.mlp == "gated" else 2) * config.d_model * config.ff_dim
    return 2 * config.n_layers * (projections + mlp)


# ------------------------------------------------------------------------------------------------
# Attention FLOPs of one forward pass, one layer, one sequence, all heads
# ------------------------------------------------------------------------------------------------

AttentionFormula = Callable[[dict[str, Any], int, int, int], float]
_FORMULAS: dict[str, AttentionFormula] = {}


def _formula(*names: str) -> Callable[[AttentionFormula], AttentionFormula]:
    def register(fn: AttentionFormula) -> AttentionFormula:
        for name in names:
            _FORMULAS[name] = fn
        return fn

    return register


@_formula("dense", "memory_efficient")
def _exact_softmax(options: dict[str, Any], n: int, n_heads: int, head_dim: int) -> float:
    return 4.0 * head_dim * n_heads * n * n


@_formula("linear")
def _linear(options: dict[str, Any], n: int, n_heads: int, head_dim: int) -> float:
    mechanism = AttentionSpec("linear", options).build()
    features = int(mechanism.features(torch.zeros(1, head_dim)).shape[-1])
    return 4.0 * n_heads * n * features * (head_dim + 1)


@_formula("performer")
def _performer(options: dict[str, Any], n: int, n_heads: int, head_dim: int) -> float:
    from polyformer.attention.performer import default_num_features

    m = options.get("num_features") or default_num_features(head_dim)
    return n_heads * (4.0 * n * m * (head_dim + 1) + 4.0 * n * head_dim * m)


@_formula("lsh")
def _lsh(options: dict[str, Any], n: int, n_heads: int, head_dim: int) -> float:
    from polyformer.attention.lsh import LSHOptions, plan_buckets
    from polyformer.options import make_options

    o = make_options(LSHOptions, options, where="attention 'lsh'")
    chunk = min(o.bucket_size, n)
    padded = math.ceil(n / chunk) * chunk
    keys = 2 * chunk if padded > chunk else chunk  # own chunk + the previous one (one chunk: itself)
    width = sum(f // 2 for f in plan_buckets(n, o.bucket_size, o.n_buckets))
    hashed = 1 if o.shared_qk else 2
    per_round = 4.0 * padded * keys * head_dim + hashed * 2.0 * padded * head_dim * width
    return n_heads * o.n_hashes * per_round


def pattern_pairs(spec: AttentionSpec, n: int, n_heads: int) -> int:
    """Allowed (query, key) pairs of a pattern mechanism at length ``n``, summed over heads."""
    return _pattern_pairs(spec.name, json.dumps(spec.options, sort_keys=True, default=list), n, n_heads)


@lru_cache(maxsize=64)
def _pattern_pairs(name: str, options_json: str, n: int, n_heads: int) -> int:
    from polyformer.attention.patterns import FULL, PARTIAL

    pattern = AttentionSpec(name, json.loads(options_json)).build().pattern
    pattern.validate(n, n_heads)
    pattern.prepare(n, n_heads)
    # Tiles the pattern classifies as full count whole; only partial tiles are evaluated.
    block = pattern.preferred_block()
    classes = pattern.block_mask(n, block, n_heads)  # (1 or H, nb, nb)
    span = torch.full((classes.shape[-1],), block, dtype=torch.long)
    span[-1] = n - block * (classes.shape[-1] - 1)  # the last tile may be short
    full = classes == FULL
    total = int((span[:, None] * span[None, :])[None].expand_as(full)[full].sum())
    heads, rows, cols = torch.nonzero(classes == PARTIAL, as_tuple=True)
    offsets = torch.arange(block)
    for start in range(0, heads.numel(), 256):  # bound the (tiles, block, block) mask evaluated at once
        h = heads[start : start + 256, None, None]
        q = rows[start : start + 256, None, None] * block + offsets[None, :, None]
        k = cols[start : start + 256, None, None] * block + offsets[None, None, :]
        inside = (q < n) & (k < n)
        allowed = pattern.mask(h, q.clamp(max=n - 1), k.clamp(max=n - 1), n)
        total += int((allowed & inside).sum())
    return total * (n_heads // classes.shape[0])  # a shared pattern counts once per head


def _is_pattern_mechanism(name: str) -> bool:
    from polyformer.attention.sparse import PatternAttention

    return issubclass(mechanism_class(name), PatternAttention)


def attention_forward_flops(spec: AttentionSpec | str | dict, n: int, n_heads: int, head_dim: int) -> float:
    """Forward FLOPs of non-causal self-attention of one sequence of ``n`` tokens, one layer."""
    spec = AttentionSpec.coerce(spec)
    if spec.name in _FORMULAS:
        return _FORMULAS[spec.name](dict(spec.options), n, n_heads, head_dim)
    if _is_pattern_mechanism(spec.name):
        return 4.0 * head_dim * pattern_pairs(spec, n, n_heads)
    raise ConfigError(
        f"no FLOP formula for attention {spec.name!r}; known: {', '.join(sorted(_FORMULAS))} and the "
        "pattern mechanisms. Add one with the _formula decorator in polyformer/bench/lra_flops.py"
    )


def keys_per_query(spec: AttentionSpec | str | dict, n: int, n_heads: int) -> float | None:
    """Mean keys a query is scored against (softmax mechanisms); None for kernelized ones."""
    spec = AttentionSpec.coerce(spec)
    if spec.name in ("dense", "memory_efficient"):
        return float(n)
    if spec.name == "lsh":
        from polyformer.attention.lsh import LSHOptions
        from polyformer.options import make_options

        o = make_options(LSHOptions, dict(spec.options), where="attention 'lsh'")
        chunk = min(o.bucket_size, n)
        return float((2 * chunk if n > chunk else chunk) * o.n_hashes)
    if spec.name in _FORMULAS:
        return None
    return pattern_pairs(spec, n, n_heads) / (n_heads * n)


# ------------------------------------------------------------------------------------------------
# A whole training step
# ------------------------------------------------------------------------------------------------


def training_step_flops(
    config: TransformerConfig, batch: int, n: int, *, n_classes: int = 2,
    attention: AttentionSpec | str | dict | None = None,
) -> StepFlops:
    """FLOPs of one training step of an encoder classifier on ``batch`` sequences of ``n`` tokens.

    ``attention`` overrides the config's mechanism (every layer); the head is one
    ``d_model × n_classes`` product per sequence. Embeddings are look-ups (no FLOPs).
    """
    spec = AttentionSpec.coerce(attention) if attention is not None else None
    attention_forward = 0.0
    for layer in range(config.n_layers):
        layer_spec = spec or config.attention_for(layer)
        attention_forward += attention_forward_flops(layer_spec, n, config.n_heads, config.attention_head_dim)
    other_forward = linear_flops_per_token(config) * batch * n + 2 * config.d_model * n_classes * batch
    return StepFlops(
        attention=TRAINING_MULTIPLIER * batch * attention_forward,
        other=float(TRAINING_MULTIPLIER * other_forward),
    )


def flop_bound(config: TransformerConfig, batch: int, n: int, attention: AttentionSpec | str | dict,
               *, n_classes: int = 2) -> float:
    """Best possible steps/s ratio of ``attention`` over dense: dense step FLOPs / its step FLOPs."""
    dense = training_step_flops(config, batch, n, n_classes=n_classes, attention="dense")
    mechanism = training_step_flops(config, batch, n, n_classes=n_classes, attention=attention)
    return dense.total / mechanism.total


__all__ = ["StepFlops", "TRAINING_MULTIPLIER", "attention_forward_flops", "flop_bound", "keys_per_query",
           "linear_flops_per_token", "pattern_pairs", "training_step_flops"]
