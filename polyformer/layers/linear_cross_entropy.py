"""Output projection + cross-entropy in row chunks, without the (tokens, vocab) logits tensor.

A language model's head and loss are most of a small model's training step: with GPT-2's 50257
ids, the logits of 2048 tokens take 411 MB, written once and then read and written again by
log-softmax, its backward and the two gradient matmuls. :func:`linear_cross_entropy` computes the
loss and, when gradients are wanted, the gradients of the hidden states, weight and bias chunk by
chunk in the forward pass (as Liger's and Apple's "cut cross-entropy" kernels do), so only
``chunk_rows x vocab`` logits ever exist. The backward pass then only scales the stored gradients.

Each chunk of logits is turned into probabilities in place by one fused softmax; the one-hot term
of the gradient is applied to (rows, d) tensors, never to (rows, vocab) ones:
``dL/dh = softmax(z) @ W - W[target]``, ``dL/dW = softmax(z).T @ h - one_hot.T @ h``. The loss is
``-log softmax(z)[target]``; rows whose probability underflows (a loss beyond ~100 nats) are
recomputed exactly.

With ``compute_dtype=torch.bfloat16`` (what autocast would use) the matmuls and the probabilities
are bf16 (the softmax accumulates in float32) and the loss is summed in float32; the loss then
carries bf16's rounding of each target probability (about 0.2 % of it, a few 1e-4 nats on the mean).

Numerically it is ``F.cross_entropy(h @ W.T + b, targets)`` (mean over targets that are not
``ignore_index``), checked against it in the tests.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: bytes of logits per chunk (128 MB: ~660 fp32 or ~1330 bf16 rows of GPT-2's vocabulary; larger
#: chunks make the weight-gradient matmul more efficient, smaller ones use less memory)
CHUNK_BYTES = 1 << 27


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ignore_index, chunk_rows, need_grads, compute_dtype):  # type: ignore[override]
        with torch.autocast(hidden.device.type, enabled=False):
            out = _chunked(hidden, weight, bias, targets, ignore_index, chunk_rows, need_grads, compute_dtype)
        loss, count, grads = out
        denominator = count.clamp(min=1).to(loss.dtype)
        ctx.save_for_backward(*(g if g is not None else torch.empty(0) for g in grads), denominator)
        ctx.present = tuple(g is not None for g in grads)
        ctx.used = False
        # mean over kept targets; NaN when every target is ignored, as in F.cross_entropy
        return torch.where(count > 0, loss / denominator, torch.full_like(loss, float("nan")))

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        if ctx.used:  # the stored gradients were scaled in place by the first backward
            raise RuntimeError("linear_cross_entropy supports one backward pass per forward (no retain_graph)")
        ctx.used = True
        *grads, denominator = ctx.saved_tensors
        scale = grad_loss / denominator
        out = [g.mul_(scale.to(g.dtype)) if present else None for g, present in zip(grads, ctx.present)]
        return out[0], out[1], out[2], None, None, None, None, None


def _chunked(hidden, weight, bias, targets, ignore_index, chunk_rows, need_grads, compute_dtype):
    """Sum of losses, number of kept targets, and unscaled gradients (or None) of hidden/weight/bias."""
    n, vocab = hidden.shape[0], weight.shape[0]
    mm = compute_dtype or hidden.dtype  # dtype of the matmuls and of the probabilities
    stats = torch.promote_types(mm, torch.float32)  # dtype of the loss
    valid = targets != ignore_index  # (N,)
    safe_targets = targets.masked_fill(~valid, 0)
    hidden_mm, weight_mm = hidden.to(mm), weight.to(mm)
    bias_mm = None if bias is None else bias.to(mm)
    total = hidden.new_zeros((), dtype=stats)
    grad_hidden = torch.empty_like(hidden) if need_grads[0] else None
    grad_weight = torch.empty_like(weight) if need_grads[1] else None
    # the weight gradient accumulates in the matmul dtype (a bf16 sum of a few chunks, like autocast)
    weight_acc = None if grad_weight is None else (grad_weight if mm == weight.dtype else weight_mm.new_empty(weight.shape))
    bias_acc = bias_mm.new_zeros(vocab, dtype=stats) if bias is not None and need_grads[2] else None
    probs_buffer = hidden_mm.new_empty(min(chunk_rows, n), vocab)  # reused: large allocations page-fault
    for start in range(0, n, chunk_rows):
        rows = slice(start, min(start + chunk_rows, n))
        h, t, keep = hidden_mm[rows], safe_targets[rows], valid[rows]  # (c, d), (c,), (c,)
        probs = probs_buffer[: h.shape[0]]  # (c, V)
        if bias_mm is not None:
            torch.addmm(bias_mm, h, weight_mm.t(), out=probs)
        else:
            torch.mm(h, weight_mm.t(), out=probs)
        if probs.device.type == "cpu":  # fused and in place (tested): big CPU allocations page-fault
            torch.ops.aten._softmax.out(probs, -1, False, out=probs)
        else:  # caching allocators make a new tensor cheap; in-place aliasing is not promised there
            probs = torch.softmax(probs, dim=-1)
        target_prob = probs.gather(1, t[:, None]).squeeze(1).to(stats)  # (c,)
        losses = -target_prob.log()
        underflow = keep & (target_prob <= 0)  # loss beyond ~100 nats: recompute those rows exactly
        if bool(underflow.any()):
            logits = hidden[rows][underflow].to(stats) @ weight.to(stats).t()
            if bias is not None:
                logits = logits + bias.to(stats)
            exact = torch.logsumexp(logits, -1) - logits.gather(1, t[underflow][:, None]).squeeze(1)
            losses = losses.masked_scatter(underflow, exact)
        total += torch.where(keep, losses, 0).sum()
        if grad_hidden is None and weight_acc is None and bias_acc is None:
            continue
        # dL/dz = probs - one_hot(t) on kept rows: probs here, the one-hot part on (rows, d) tensors
        keep_mm = keep.to(mm)[:, None]
        if grad_hidden is not None:
            g = (probs @ weight_mm).to(stats) - weight[t].to(stats)  # (c, d)
            grad_hidden[rows] = (g * keep[:, None]).to(grad_hidden.dtype)
        if weight_acc is not None:
            if start == 0:
                torch.mm(probs.t(), h * keep_mm, out=weight_acc)
            else:
                weight_acc.addmm_(probs.t(), h * keep_mm)
        if bias_acc is not None:
            bias_acc += (probs.t() @ keep_mm.squeeze(1)).to(stats)
    if grad_weight is not None:
        if weight_acc is not grad_weight:
            grad_weight.copy_(weight_acc)
        grad_weight.index_add_(0, safe_targets[valid], -hidden[valid].to(grad_weight.dtype))
    grad_bias = None
    if bias_acc is not None:
        bias_acc.index_add_(0, safe_targets[valid], -torch.ones_like(bias_acc[: int(valid.sum())]))
        grad_bias = bias_acc.to(bias.dtype)
    return total, valid.sum(), (grad_hidden, grad_weight, grad_bias)


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    targets: Tensor,
    ignore_index: int = -100,
    chunk_rows: int | None = None,
    compute_dtype: torch.dtype | None = None,
) -> Tensor:
    """``F.cross_entropy(hidden @ weight.T + bias, targets, ignore_index=...)`` (mean) in chunks.

    ``hidden`` (N, d), ``weight`` (V, d), ``bias`` (V,) or None, ``targets`` (N,).
    ``compute_dtype``: dtype of the matmuls (None = the inputs'; under autocast pass its dtype).
    Gradients are computed in the forward pass only when autograd will need them; one backward
    pass per call.
    """
    if chunk_rows is None:
        itemsize = torch.empty((), dtype=compute_dtype or hidden.dtype).element_size()
        chunk_rows = max(1, CHUNK_BYTES // (itemsize * weight.shape[0]))
    wants = torch.is_grad_enabled()
    need = (wants and hidden.requires_grad, wants and weight.requires_grad,
            wants and bias is not None and bias.requires_grad)
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, ignore_index, chunk_rows, need, compute_dtype)
