"""Objectives and penalties on known inputs: closed forms on linear discriminators and generators."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gandist.losses import (
    gradient_penalty,
    interpolate,
    orthogonal_penalty,
    path_length_penalty,
    r1_penalty,
)
from gandist.registry import LOSSES

REAL = torch.tensor([2.0, 0.5])
FAKE = torch.tensor([-2.0, 0.5])


@pytest.mark.parametrize(
    ("name", "d_expected", "g_expected"),
    [
        # softplus(-r) + softplus(f), each averaged; G: softplus(-f)
        (
            "nonsaturating",
            (math.log1p(math.exp(-2)) + math.log1p(math.exp(-0.5))) / 2
            + (math.log1p(math.exp(-2)) + math.log1p(math.exp(0.5))) / 2,
            (math.log1p(math.exp(2)) + math.log1p(math.exp(-0.5))) / 2,
        ),
        ("hinge", (0 + 0.5) / 2 + (0 + 1.5) / 2, 0.75),  # relu(1 - r) + relu(1 + f); G: -f
        ("wasserstein", -(1.25 - (-0.75)), 0.75),  # -(E r - E f); G: -E f
        ("least_squares", 0.5 * ((1 + 0.25) / 2 + (4 + 0.25) / 2), 0.5 * (9 + 0.25) / 2),
    ],
)
def test_objective_values_on_known_logits(name: str, d_expected: float, g_expected: float) -> None:
    objective = LOSSES.get(name)
    d_loss, d_metrics = objective.d_loss(REAL, FAKE)
    g_loss, _ = objective.g_loss(FAKE)
    assert d_loss.item() == pytest.approx(d_expected, rel=1e-6)
    assert g_loss.item() == pytest.approx(g_expected, rel=1e-6)
    assert all(not v.requires_grad for v in d_metrics.values())


def test_objectives_accept_half_precision_logits() -> None:
    for name in LOSSES.names():
        loss, _ = LOSSES.get(name).d_loss(REAL.half(), FAKE.bfloat16())
        assert loss.dtype == torch.float32


def _linear_critic(weight: torch.Tensor) -> nn.Module:
    """D(x) = <w, flatten(x)> + 0.3, whose input gradient is w everywhere."""
    critic = nn.Sequential(nn.Flatten(), nn.Linear(weight.numel(), 1))
    with torch.no_grad():
        critic[1].weight.copy_(weight.flatten()[None])
        critic[1].bias.fill_(0.3)
    return critic


def test_gradient_penalty_closed_form_on_linear_critic() -> None:
    weight = torch.full((1, 2, 2), 1.5)  # |w| = 3
    critic = _linear_critic(weight)
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    points = interpolate(real, fake)
    assert points.requires_grad and points.shape == real.shape
    penalty, metrics = gradient_penalty(points, critic(points).squeeze(1))
    assert penalty.item() == pytest.approx((3.0 - 1.0) ** 2, rel=1e-6)
    assert metrics["gp_grad_norm"].item() == pytest.approx(3.0, rel=1e-6)
    # The penalty is differentiable w.r.t. D's weights: d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|.
    penalty.backward()
    expected = 2 * (3.0 - 1.0) * weight.flatten() / 3.0
    torch.testing.assert_close(critic[1].weight.grad.flatten(), expected)


def test_interpolates_lie_between_real_and_fake() -> None:
    real, fake = torch.zeros(100, 3), torch.ones(100, 3)
    points = interpolate(real, fake)
    assert ((points >= 0) & (points <= 1)).all()
    assert torch.allclose(points, points[:, :1].expand_as(points))  # one alpha per sample


def test_r1_closed_form_on_linear_critic() -> None:
    weight = torch.tensor([[[1.0, -2.0], [2.0, 0.0]]])  # |w|^2 = 9
    critic = _linear_critic(weight)
    reals = torch.randn(4, 1, 2, 2).requires_grad_(True)
    penalty, metrics = r1_penalty(reals, critic(reals).squeeze(1))
    assert penalty.item() == pytest.approx(9.0, rel=1e-6)
    penalty.backward()  # d/dw |w|^2 = 2w
    torch.testing.assert_close(critic[1].weight.grad.flatten(), 2 * weight.flatten())


def test_fp16_penalty_uses_scaled_then_unscaled_gradients() -> None:
    """Under fp16 autocast (on CPU), an input gradient of 1e-8 flushes to zero unless the
    output is loss-scaled before differentiating; the penalty divides the scale out again."""
    num = 16
    critic = nn.Sequential(nn.Linear(num, 1, bias=False), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        critic[0].weight.fill_(1e-4)
        critic[1].weight.fill_(1e-4)
    expected = num * 1e-8**2  # |grad|^2 with grad = 1e-4 * 1e-4 per element
    reals = torch.randn(3, num).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        unscaled, _ = r1_penalty(reals, critic(reals).squeeze(1))
    with torch.autocast("cpu", dtype=torch.float16):
        scaled, _ = r1_penalty(reals, critic(reals).squeeze(1), grad_scale=2.0**14)
    assert unscaled.item() == 0.0  # underflow: fp16 cannot hold 1e-8
    assert scaled.item() == pytest.approx(expected, rel=2e-3)


def test_fp16_penalty_overflow_becomes_inf_for_the_scaler_to_skip() -> None:
    critic = _linear_critic(torch.full((4,), 100.0))
    reals = torch.randn(2, 4).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        penalty, _ = r1_penalty(reals, critic(reals).squeeze(1), grad_scale=2.0**16)
    assert not math.isfinite(penalty.item())


def test_path_length_closed_form_on_linear_generator() -> None:
    num_ws, w_dim, pixels = 2, 3, 4  # images [B, 1, 2, 2]
    torch.manual_seed(0)
    matrix = torch.randn(num_ws * w_dim, pixels)
    ws = torch.randn(5, num_ws, w_dim).requires_grad_(True)
    images = (ws.flatten(1) @ matrix).view(5, 1, 2, 2)
    noise = torch.randn(5, 1, 2, 2)
    pl_mean = torch.tensor(0.5)
    penalty, metrics = path_length_penalty(images, ws, pl_mean, decay=0.1, noise=noise)
    # J^T y per sample, y = noise / sqrt(H*W); length = sqrt(mean over ws of |.|^2 over w_dim).
    jt_y = (noise.flatten(1) / 2.0) @ matrix.t()  # [B, num_ws * w_dim]
    lengths = jt_y.view(5, num_ws, w_dim).square().sum(2).mean(1).sqrt()
    new_mean = 0.5 + 0.1 * (lengths.mean() - 0.5)
    assert metrics["pl_mean"].item() == pytest.approx(new_mean.item(), rel=1e-5)
    assert penalty.item() == pytest.approx((lengths - new_mean).square().mean().item(), rel=1e-5)


def test_orthogonal_penalty_counts_off_diagonal_terms_only() -> None:
    weight = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # W W^T = [[1, 1], [1, 2]]
    penalty, _ = orthogonal_penalty([weight, torch.eye(3) * 5])
    assert penalty.item() == pytest.approx(2.0)
