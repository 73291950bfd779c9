"""Reusable compositions of the core: two towers in one embedding space, two streams that cross-attend.

A family (CLIP, LXMERT) holds only its front-ends and heads and composes one of these.
"""

from polyformer.compose.two_stream import CrossModalLayer, TwoStreamEncoder, TwoStreamOutput
from polyformer.compose.two_tower import TwoTower, TwoTowerOutput, contrastive_loss

__all__ = [
    "CrossModalLayer",
    "TwoStreamEncoder",
    "TwoStreamOutput",
    "TwoTower",
    "TwoTowerOutput",
    "contrastive_loss",
]
