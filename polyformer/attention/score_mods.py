"""Score functions: biases computed from positions instead of stored as (Nq, Nk) tensors.

A score function follows FlexAttention's convention::

    score_mod(score, b, h, q_idx, kv_idx) -> score

``score`` is one tile of scaled scores, shape (B, H, n, m); ``b`` (B, 1, 1, 1), ``h`` (1, H, 1, 1),
``q_idx`` (1, 1, n, 1) and ``kv_idx`` (1, 1, 1, m) are integer index tensors that broadcast against
it. ``q_idx`` is the query's *position* (``q_offset`` + row), so a decoding step sees the same
positions as the full sequence; ``kv_idx`` is the key's position. Write the function with
broadcasting tensor operations (no Python branching on the values).

A score function may close over tensors that require grad (a learnable relative-position table,
learnable slopes): memory-efficient attention finds them and returns their gradients.

Named built-ins (:data:`SCORE_MODS`) make the choice serialisable in a model config:

* ``"alibi"``: ALiBi (Press et al., 2022) with the standard per-head slopes,
  ``score + slope_h · (kv_idx − q_idx)``, the causal form of the paper.
* ``"alibi_symmetric"``: ``score − slope_h · |kv_idx − q_idx|``, the usual bidirectional variant.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import torch
from torch import Tensor

from polyformer.errors import ConfigError

ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


class ScoreBias:
    """An additive score function, ``score + bias(b, h, q_idx, kv_idx)``.

    Declaring a score function additive lets the kernel add it in place and skip autograd in the
    backward pass (the bias does not depend on the score). Subclasses implement :meth:`bias`
    and may override :meth:`add_to_` with a fused version.
    """

    def bias(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        """The additive bias, broadcastable against the score tile."""
        raise NotImplementedError

    def add_to_(
        self, score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, alpha: float = 1.0
    ) -> None:
        """Add ``alpha`` × the bias to ``score`` (B, H, n, m) in place."""
        score.add_(self.bias(b, h, q_idx, kv_idx), alpha=alpha)

    def __call__(self, score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return score + self.bias(b, h, q_idx, kv_idx).to(score.dtype)


def alibi_slopes(num_heads: int) -> Tensor:
    """The standard ALiBi slopes: a geometric sequence 2^(-8/n), 2^(-16/n), ... for n heads.

    For a head count that is not a power of two, the slopes of the nearest lower power of two are
    followed by every other slope of the next power of two (the reference implementation's rule).
    """
    if num_heads < 1:
        raise ConfigError(f"alibi_slopes: num_heads must be >= 1, got {num_heads}")

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    lower = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = power_of_two(lower)
    if lower < num_heads:
        slopes += power_of_two(2 * lower)[0::2][: num_heads - lower]
    return torch.tensor(slopes, dtype=torch.float64)


class ALiBi(ScoreBias):
    """ALiBi: ``slope_h · (kv_idx − q_idx)`` (or ``−slope_h · |kv_idx − q_idx|`` when symmetric).

    ``slopes`` (H,) may be a learnable tensor; a plain tensor keeps the kernel's fast path.
    """

    def __init__(self, slopes: Tensor, symmetric: bool = False) -> None:
        self.slopes = slopes
        self.symmetric = symmetric

    def _distance(self, q_idx: Tensor, kv_idx: Tensor, dtype: torch.dtype) -> Tensor:
        rel = (kv_idx - q_idx).to(dtype)  # (1, 1, n, m)
        return -rel.abs() if self.symmetric else rel

    def bias(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        slopes = self.slopes[h]  # (1, H, 1, 1)
        return slopes * self._distance(q_idx, kv_idx, slopes.dtype)

    def add_to_(
        self, score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, alpha: float = 1.0
    ) -> None:
        # One fused pass over the tile: score += alpha * slope_h * distance.
        slopes = self.slopes.to(device=score.device, dtype=score.dtype)[h]
        score.addcmul_(slopes, self._distance(q_idx, kv_idx, score.dtype), value=alpha)

    def __repr__(self) -> str:
        return f"ALiBi(heads={self.slopes.numel()}, symmetric={self.symmetric})"


#: Named score functions: name -> factory taking the number of heads.
SCORE_MODS: dict[str, Callable[[int], ScoreMod]] = {
    "alibi": lambda heads: ALiBi(alibi_slopes(heads)),
    "alibi_symmetric": lambda heads: ALiBi(alibi_slopes(heads), symmetric=True),
}

ScoreModSpec = Union[str, ScoreMod, None]


def check_score_mod_spec(spec: object, where: str) -> None:
    """Raise ConfigError unless ``spec`` is None, a known name, or a callable."""
    if spec is None or callable(spec):
        return
    if isinstance(spec, str):
        if spec not in SCORE_MODS:
            raise ConfigError(
                f"{where}: unknown score_mod {spec!r}; named score functions: "
                f"{', '.join(sorted(SCORE_MODS))} (or pass a callable "
                "score_mod(score, b, h, q_idx, kv_idx) -> score)"
            )
        return
    raise ConfigError(
        f"{where}: score_mod must be a name ({', '.join(sorted(SCORE_MODS))}), a callable "
        f"score_mod(score, b, h, q_idx, kv_idx) -> score, or None; got {type(spec).__name__}"
    )


def resolve_score_mod(spec: ScoreModSpec, num_heads: int, where: str = "score_mod") -> ScoreMod | None:
    """The callable a spec names: built-ins are instantiated for ``num_heads`` heads."""
    check_score_mod_spec(spec, where)
    if isinstance(spec, str):
        return SCORE_MODS[spec](num_heads)
    return spec  # type: ignore[return-value]


def captured_leaves(
    score_mod: ScoreMod, batch: int, heads: int, dtype: torch.dtype, device: torch.device
) -> list[Tensor]:
    """The leaf tensors requiring grad that ``score_mod`` depends on (e.g. a bias table).

    The function is probed on a one-entry tile and its autograd graph walked back to the leaves.
    Tensors captured by the function that are not leaves (``slopes = softplus(raw)``) are
    differentiated through, so their gradient reaches the leaf they derive from.
    """
    probe = torch.zeros(batch, heads, 1, 1, dtype=dtype, device=device)
    index = dict(dtype=torch.long, device=device)
    with torch.enable_grad():
        out = score_mod(
            probe,
            torch.arange(batch, **index).view(-1, 1, 1, 1),
            torch.arange(heads, **index).view(1, -1, 1, 1),
            torch.zeros(1, 1, 1, 1, **index),
            torch.zeros(1, 1, 1, 1, **index),
        )
    if not isinstance(out, Tensor) or out.grad_fn is None:
        return []
    leaves: list[Tensor] = []
    seen: set[int] = set()
    stack = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # AccumulateGrad nodes hold their leaf
        if isinstance(variable, Tensor):
            leaves.append(variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves
