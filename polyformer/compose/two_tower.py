"""Two towers, one embedding space (CLIP, ALIGN, CLAP): projections, a learnable temperature, a symmetric loss.

Each tower is any module returning pooled features (B, width), or an output whose
``pooler_output`` holds them (the tower's whole output is then kept, e.g. for its hidden states);
this module owns only what joins them, as open_clip's ``CLIP`` does::

    model = TwoTower(vision_encoder, text_encoder, dim_a=768, dim_b=512, embed_dim=512)
    out = model(pixel_values, {"input_ids": ids, "attention_mask": mask}, return_loss=True)
    out.logits_per_a  # (images, texts): CLIP's logits_per_image when tower a is the image tower

Parameter names are stable for key maps: ``tower_a.*``, ``tower_b.*``, ``proj_a``, ``proj_b``,
``logit_scale`` (map them with ``KeyMap.with_prefix`` / ``KeyMap.merge``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyformer.errors import ConfigError, ShapeError
from polyformer.options import require

#: CLIP's initial temperature: logits are cosine similarities times 1/0.07.
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
#: CLIP clips the temperature so that logits are scaled by at most 100.
MAX_LOGIT_SCALE = 100.0


def contrastive_loss(logits_per_a: Tensor) -> Tensor:
    """CLIP's symmetric loss: the mean of cross-entropy over rows (a -> b) and over columns (b -> a).

    Pair ``i`` of the batch is the positive of row ``i`` and of column ``i``.
    """
    if logits_per_a.dim() != 2 or logits_per_a.shape[0] != logits_per_a.shape[1]:
        raise ShapeError(
            f"contrastive_loss: logits must be a square (batch, batch) matrix of paired items, got "
            f"{tuple(logits_per_a.shape)}"
        )
    target = torch.arange(logits_per_a.shape[0], device=logits_per_a.device)
    return (F.cross_entropy(logits_per_a, target) + F.cross_entropy(logits_per_a.t(), target)) / 2


@dataclass
class TwoTowerOutput:
    """Similarity logits both ways, the normalised embeddings, the pooled features, the loss.

    ``logits_per_a`` is (Na, Nb) and ``logits_per_b`` its transpose; ``embeds_*`` are unit-length
    projections; ``features_*`` the towers' pooled outputs before projection; ``outputs_*`` the
    towers' whole outputs when they returned more than a tensor (None otherwise).
    """

    logits_per_a: Tensor
    logits_per_b: Tensor
    embeds_a: Tensor
    embeds_b: Tensor
    features_a: Tensor
    features_b: Tensor
    loss: Tensor | None = None
    outputs_a: Any = None
    outputs_b: Any = None


def _call(tower: nn.Module, inputs: Any) -> Tensor:
    """A tower on its inputs: a dict is passed as keywords, a tuple as positional arguments."""
    if isinstance(inputs, dict):
        return tower(**inputs)
    if isinstance(inputs, tuple):
        return tower(*inputs)
    return tower(inputs)


class TwoTower(nn.Module):
    """Two encoders projected into a shared space and compared by scaled cosine similarity.

    ``dim_a`` / ``dim_b``: widths of the towers' pooled features; ``embed_dim``: the shared space.
    ``projection_bias`` (CLIP: False). ``logit_scale_init``: the log temperature at start
    (ln(1/0.07)). ``max_logit_scale``: the forward clamps ``exp(logit_scale)`` to at most this
    (100, where CLIP's training clips it; checkpoints sit at or below it, so their outputs are
    unchanged; None = no clamp, Hugging Face's forward).
    """

    def __init__(
        self,
        tower_a: nn.Module,
        tower_b: nn.Module,
        dim_a: int,
        dim_b: int,
        embed_dim: int,
        *,
        projection_bias: bool = False,
        logit_scale_init: float = INITIAL_LOGIT_SCALE,
        max_logit_scale: float | None = MAX_LOGIT_SCALE,
    ) -> None:
        super().__init__()
        for name, value in (("dim_a", dim_a), ("dim_b", dim_b), ("embed_dim", embed_dim)):
            require(isinstance(value, int) and value > 0, f"TwoTower: {name} must be a positive integer, got {value!r}")
        require(
            max_logit_scale is None or max_logit_scale > 0,
            f"TwoTower: max_logit_scale must be positive or None, got {max_logit_scale!r}",
        )
        self.tower_a = tower_a
        self.tower_b = tower_b
        self.proj_a = nn.Linear(dim_a, embed_dim, bias=projection_bias)
        self.proj_b = nn.Linear(dim_b, embed_dim, bias=projection_bias)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        self.max_logit_scale = max_logit_scale

    def features_a(self, inputs: Any) -> Tensor:
        """Tower a's pooled features, projected (not normalised; CLIP's ``get_image_features``)."""
        return self.proj_a(self._pooled(self.tower_a, inputs, "a")[0])

    def features_b(self, inputs: Any) -> Tensor:
        """Tower b's pooled features, projected (not normalised; CLIP's ``get_text_features``)."""
        return self.proj_b(self._pooled(self.tower_b, inputs, "b")[0])

    def scale(self) -> Tensor:
        """exp(logit_scale), clamped to ``max_logit_scale``."""
        log_scale = self.logit_scale
        if self.max_logit_scale is not None:
            log_scale = log_scale.clamp(max=math.log(self.max_logit_scale))
        return log_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clip the parameter itself to [0, ln(max_logit_scale)] (open_clip does this after each step)."""
        upper = math.log(self.max_logit_scale) if self.max_logit_scale is not None else None
        self.logit_scale.clamp_(min=0.0, max=upper)

    def forward(self, inputs_a: Any, inputs_b: Any, *, return_loss: bool = False) -> TwoTowerOutput:
        """Embed both batches and compare every a with every b; pair i of the batches matches.

        Inputs are passed to the towers as they are (a dict as keywords, a tuple as positional
        arguments). ``return_loss`` adds :func:`contrastive_loss` (needs equal batch sizes).
        """
        pooled_a, outputs_a = self._pooled(self.tower_a, inputs_a, "a")
        pooled_b, outputs_b = self._pooled(self.tower_b, inputs_b, "b")
        embeds_a = F.normalize(self.proj_a(pooled_a), dim=-1)
        embeds_b = F.normalize(self.proj_b(pooled_b), dim=-1)
        logits_per_a = self.scale() * embeds_a @ embeds_b.t()  # (Na, Nb)
        loss = None
        if return_loss:
            if logits_per_a.shape[0] != logits_per_a.shape[1]:
                raise ShapeError(
                    f"TwoTower: the loss pairs item i of each batch, so both need one size; got "
                    f"{logits_per_a.shape[0]} and {logits_per_a.shape[1]}"
                )
            loss = contrastive_loss(logits_per_a)
        return TwoTowerOutput(
            logits_per_a=logits_per_a, logits_per_b=logits_per_a.t(), embeds_a=embeds_a,
            embeds_b=embeds_b, features_a=pooled_a, features_b=pooled_b, loss=loss,
            outputs_a=outputs_a, outputs_b=outputs_b,
        )

    def _pooled(self, tower: nn.Module, inputs: Any, which: str) -> tuple[Tensor, Any]:
        """(pooled features, the tower's whole output or None when it returned just the tensor)."""
        output = _call(tower, inputs)
        pooled, whole = (output, None) if isinstance(output, Tensor) else (getattr(output, "pooler_output", None), output)
        projection = self.proj_a if which == "a" else self.proj_b
        if not isinstance(pooled, Tensor):
            raise ConfigError(
                f"TwoTower: tower {which} must return pooled features as a tensor (batch, width) or an "
                f"output with a pooler_output tensor, got {type(output).__name__}; wrap it to return e.g. "
                "its pooler output"
            )
        if pooled.dim() != 2 or pooled.shape[-1] != projection.in_features:
            raise ShapeError(
                f"TwoTower: tower {which} must return (batch, {projection.in_features}) pooled "
                f"features, got {tuple(pooled.shape)}"
            )
        return pooled, whole
