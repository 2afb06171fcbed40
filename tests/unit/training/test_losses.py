"""Losses on tiny fakes with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from larr.training.losses.alignment import alignment_loss
from larr.training.losses.info_nce import Temperature, info_nce


def test_info_nce_known_answer_orthogonal():
    # identity embeddings: positive similarity 1, negatives 0 -> loss = -log(e^{1/t} / (e^{1/t} + (B-1)))
    b, t = 4, 0.5
    eye = torch.eye(b)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + (b - 1)))
    assert info_nce(eye, eye, t).item() == pytest.approx(expected, rel=1e-6)
    assert info_nce(eye, eye, t, symmetric=False).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_uniform_is_log_b():
    same = F.normalize(torch.ones(8, 3), dim=-1)  # every pair equally similar
    assert info_nce(same, same, 0.05).item() == pytest.approx(math.log(8), rel=1e-6)


def test_info_nce_prefers_matching_pairs_and_has_gradients():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(16, 8), dim=-1).requires_grad_()
    matched = info_nce(q, q.detach(), 0.1)
    shuffled = info_nce(q, q.detach().roll(1, dims=0), 0.1)
    assert matched.item() < shuffled.item()
    matched.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        info_nce(torch.randn(3, 4), torch.randn(2, 4), 0.1)


def test_temperature_fixed_and_learnable():
    fixed = Temperature(0.05, learnable=False)
    assert fixed().item() == pytest.approx(0.05)
    assert list(fixed.parameters()) == []
    learn = Temperature(0.05, learnable=True)
    assert len(list(learn.parameters())) == 1


def test_alignment_loss_stops_gradient_at_collaborative_side():
    torch.manual_seed(0)
    scene = torch.randn(6, 4, requires_grad=True)
    collaborative = torch.randn(6, 4, requires_grad=True)
    loss = alignment_loss(scene, collaborative, 0.1)
    loss.backward()
    assert scene.grad.abs().sum() > 0
    assert collaborative.grad is None
    # aligned vectors give a lower loss than random ones
    assert alignment_loss(collaborative.detach() * 3, collaborative, 0.1) < alignment_loss(scene.detach(), collaborative, 0.1)
