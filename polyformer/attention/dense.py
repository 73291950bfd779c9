"""Dense attention: PyTorch's fused ``scaled_dot_product_attention``, the baseline of every benchmark."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from polyformer.attention.base import AttentionMechanism
from polyformer.attention.reference import combine_masks
from polyformer.attention.registry import register


@register
class DenseAttention(AttentionMechanism):
    """Exact softmax attention over every (allowed) key, O(N²) time and memory in the scores.

    A per-call ``score_mod`` is applied to the whole score matrix (the fused kernel cannot call
    one), so that path materialises (B, H, Nq, Nk) probabilities.
    """

    name = "dense"
    supports_bias = True
    supports_score_mod = True

    def dense_mask(self, n_q: int, n_k: int, n_heads: int, q_offset: int, device: torch.device) -> None:
        """Every key is allowed (before causality and padding)."""
        return None

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, scale, q_offset, score_mod=None) -> Tensor:
        n_q, n_k = q.shape[-2], k.shape[-2]
        if score_mod is not None:
            probs = self.attention_probabilities(
                q, k, causal, key_padding_mask, bias=bias, score_mod=score_mod, scale=scale,
                q_offset=q_offset,
            )
            return torch.matmul(probs, v)
        if bias is None and key_padding_mask is None and (not causal or (q_offset == 0 and n_q == n_k)):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
        mask = combine_masks(
            n_q, n_k, causal=causal, key_padding_mask=key_padding_mask, q_offset=q_offset,
            device=q.device,
        )
        if bias is not None:
            # An additive float mask carries both the bias and the -inf of masked keys.
            attn_mask = bias.to(q.dtype)
            if mask is not None:
                attn_mask = attn_mask.masked_fill(~mask, float("-inf"))
        else:
            attn_mask = mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
        if mask is not None:
            # Rows without any allowed key are defined as zeros (SDPA agrees on current torch;
            # this keeps the contract on every supported version).
            out = out.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
        return out
