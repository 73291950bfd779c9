"""The chunked head + loss equals F.cross_entropy of the full logits: loss and every gradient."""

import pytest
import torch
import torch.nn.functional as F

from polyformer.layers.linear_cross_entropy import linear_cross_entropy


def _inputs(n=37, d=16, vocab=50, bias=True, dtype=torch.float64):
    hidden = torch.randn(n, d, dtype=dtype, requires_grad=True)
    weight = torch.randn(vocab, d, dtype=dtype, requires_grad=True)
    b = torch.randn(vocab, dtype=dtype, requires_grad=True) if bias else None
    targets = torch.randint(0, vocab, (n,))
    targets[::5] = -100
    return hidden, weight, b, targets


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk_rows", [1, 8, 100])
def test_loss_and_gradients_equal_cross_entropy(bias, chunk_rows):
    hidden, weight, b, targets = _inputs(bias=bias)
    leaves = [hidden, weight] + ([b] if bias else [])
    expected = F.cross_entropy(F.linear(hidden, weight, b), targets)
    expected_grads = torch.autograd.grad(expected * 1.7, leaves)
    got = linear_cross_entropy(hidden, weight, b, targets, chunk_rows=chunk_rows)
    got_grads = torch.autograd.grad(got * 1.7, leaves)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, atol=1e-12, rtol=1e-12)


def test_underflowing_probabilities_keep_the_exact_loss():
    hidden, weight, _, targets = _inputs(bias=False, dtype=torch.float32)
    with torch.no_grad():
        weight[targets[1]] -= 200 * hidden[1] / hidden[1].norm() ** 2  # target logit ~200 below the rest
    expected = F.cross_entropy(hidden @ weight.t(), targets)
    got = linear_cross_entropy(hidden, weight, None, targets)
    assert expected.item() > 5
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bf16_compute_is_close_to_autocast():
    torch.manual_seed(0)
    hidden, weight, b, targets = _inputs(n=64, d=32, vocab=300, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.cross_entropy(F.linear(hidden, weight, b).float(), targets)
    exact = F.cross_entropy(F.linear(hidden, weight, b), targets)
    got = linear_cross_entropy(hidden, weight, b, targets, compute_dtype=torch.bfloat16)
    assert got.dtype == torch.float32
    assert abs(got.item() - expected.item()) < 5e-3 and abs(got.item() - exact.item()) < 5e-2
    grads = torch.autograd.grad(got, [hidden, weight, b])
    exact_grads = torch.autograd.grad(exact, [hidden, weight, b])
    for g, e in zip(grads, exact_grads):
        assert g.dtype == torch.float32
        assert (g - e).norm() / e.norm() < 2e-2


def test_no_grad_all_ignored_and_double_backward():
    hidden, weight, b, targets = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, b, targets),
                                   F.cross_entropy(F.linear(hidden, weight, b), targets))
    assert torch.isnan(linear_cross_entropy(hidden, weight, b, torch.full_like(targets, -100)))
    loss = linear_cross_entropy(hidden, weight, b, targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()
