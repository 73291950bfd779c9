"""Token embedding: ids -> vectors, with a clear error for ids outside the vocabulary."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyformer.errors import ShapeError


class TokenEmbedding(nn.Embedding):
    """``nn.Embedding`` over ``vocab_size`` ids; :meth:`logits` is the tied output projection."""

    def __init__(self, vocab_size: int, d_model: int, padding_idx: int | None = None) -> None:
        super().__init__(vocab_size, d_model, padding_idx=padding_idx)

    def forward(self, ids: Tensor) -> Tensor:
        """(B, N) integer ids -> (B, N, d_model)."""
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise ShapeError(f"TokenEmbedding: ids must be an integer tensor, got {ids.dtype}")
        # The range check reads two scalars back from the device; it turns an opaque device-side
        # index assert into a message naming the fix. Skipped while compiling (graph breaks).
        checked = not torch.compiler.is_compiling() and ids.numel() > 0
        if checked and (int(ids.min()) < 0 or int(ids.max()) >= self.num_embeddings):
            raise ShapeError(
                f"TokenEmbedding: ids must lie in [0, {self.num_embeddings}), got range "
                f"[{int(ids.min())}, {int(ids.max())}]; check the tokenizer matches the model's vocab_size"
            )
        return super().forward(ids)

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., d_model) -> (..., vocab_size) scores with the embedding matrix (weight tying)."""
        return hidden @ self.weight.t()
