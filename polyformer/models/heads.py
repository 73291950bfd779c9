"""Task heads and losses shared by every family (classification, regression, multi-label)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PROBLEM_TYPES", "classification_loss"]

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


def classification_loss(logits: Tensor, labels: Tensor, problem_type: str | None) -> Tensor:
    """Hugging Face's rule: regression (MSE) for one output, cross-entropy for integer labels, else BCE."""
    num_labels = logits.shape[-1]
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int32, torch.int16, torch.uint8):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.float().reshape(logits.shape[:-1]))
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.float(), labels.reshape(-1).long())
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
