"""Two towers in one embedding space: logits and the symmetric contrastive loss against closed forms."""

import math

import pytest
import torch
from torch import nn

from polyformer.compose import TwoTower, contrastive_loss
from polyformer.errors import ConfigError, ShapeError


class _MeanPool(nn.Module):
    """A stand-in tower: a linear layer, then the mean over positions (optionally masked)."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x, mask=None):
        h = self.linear(x)
        if mask is None:
            return h.mean(1)
        m = mask[..., None].float()
        return (h * m).sum(1) / m.sum(1)


def _model(**kwargs):
    torch.manual_seed(0)
    return TwoTower(_MeanPool(5, 6), _MeanPool(3, 4), dim_a=6, dim_b=4, embed_dim=8, **kwargs)


def _naive(model, pooled_a, pooled_b):
    """Logits and loss written out element by element."""
    wa, wb = model.proj_a.weight, model.proj_b.weight
    scale = min(math.exp(model.logit_scale.item()), 100.0)
    n_a, n_b = pooled_a.shape[0], pooled_b.shape[0]
    ea = [wa @ pooled_a[i] for i in range(n_a)]
    eb = [wb @ pooled_b[j] for j in range(n_b)]
    logits = torch.zeros(n_a, n_b)
    for i in range(n_a):
        for j in range(n_b):
            logits[i, j] = scale * torch.dot(ea[i], eb[j]) / (ea[i].norm() * eb[j].norm())
    rows = sum(-logits[i, i] + torch.logsumexp(logits[i], 0) for i in range(n_a)) / n_a
    cols = sum(-logits[j, j] + torch.logsumexp(logits[:, j], 0) for j in range(n_b)) / n_b
    return logits, (rows + cols) / 2


def test_logits_and_loss_equal_the_naive_computation():
    model = _model()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    xa, xb = torch.randn(4, 7, 5), torch.randn(4, 3, 3)
    mask_b = torch.ones(4, 3, dtype=torch.bool)
    mask_b[2, 1:] = False
    out = model(xa, {"x": xb, "mask": mask_b}, return_loss=True)
    want_logits, want_loss = _naive(model, model.tower_a(xa), model.tower_b(xb, mask_b))
    torch.testing.assert_close(out.logits_per_a, want_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits_per_b, want_logits.t(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, want_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.embeds_a.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(model.features_a(xa), model.proj_a(model.tower_a(xa)))


def test_logit_scale_is_clamped_at_100_in_the_forward_and_in_place():
    model = _model()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(400.0))
    xa, xb = torch.randn(3, 2, 5), torch.randn(3, 2, 3)
    out = model(xa, xb)
    want, _ = _naive(model, model.tower_a(xa), model.tower_b(xb))  # the naive version caps at 100
    torch.testing.assert_close(out.logits_per_a, want, atol=1e-4, rtol=1e-5)
    assert out.logits_per_a.abs().max().item() <= 100.0 + 1e-4
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))
    unclamped = _model(max_logit_scale=None)
    with torch.no_grad():
        unclamped.logit_scale.fill_(math.log(400.0))
    assert unclamped.scale().item() == pytest.approx(400.0)


def test_loss_gradient_reaches_both_towers_and_the_temperature():
    model = _model()
    out = model(torch.randn(3, 2, 5), torch.randn(3, 2, 3), return_loss=True)
    out.loss.backward()
    for p in (model.tower_a.linear.weight, model.tower_b.linear.weight, model.proj_a.weight, model.logit_scale):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0


def test_contrastive_loss_of_a_perfect_diagonal_is_near_zero_and_symmetric():
    logits = torch.eye(5) * 50
    assert float(contrastive_loss(logits)) < 1e-10
    uniform = torch.zeros(4, 4)
    assert float(contrastive_loss(uniform)) == pytest.approx(math.log(4))


def test_keys_are_stable_for_key_maps():
    keys = set(_model().state_dict())
    assert keys == {"tower_a.linear.weight", "tower_a.linear.bias", "tower_b.linear.weight",
                    "tower_b.linear.bias", "proj_a.weight", "proj_b.weight", "logit_scale"}


def test_bad_inputs_are_named():
    model = _model()
    with pytest.raises(ShapeError, match="both need one size"):
        model(torch.randn(3, 2, 5), torch.randn(2, 2, 3), return_loss=True)
    with pytest.raises(ShapeError, match=r"tower a must return \(batch, 6\)"):
        TwoTower(nn.Identity(), _MeanPool(3, 4), 6, 4, 8)(torch.randn(2, 5), torch.randn(2, 2, 3))
    with pytest.raises(ConfigError, match="must return pooled features as a tensor"):
        TwoTower(nn.ModuleDict(), _MeanPool(3, 4), 6, 4, 8)._pooled(lambda x: (x,), torch.randn(2, 6), "a")
    with pytest.raises(ShapeError, match="square"):
        contrastive_loss(torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="embed_dim must be a positive integer"):
        TwoTower(nn.Identity(), nn.Identity(), 2, 2, 0)
