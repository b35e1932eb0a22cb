"""Objectives and penalties on known inputs: closed forms on linear and quadratic critics and generators."""

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


@pytest.mark.parametrize("name", ["nonsaturating", "hinge", "wasserstein", "least_squares"])
def test_every_d_loss_logs_mean_raw_logits(name: str) -> None:
    _, metrics = LOSSES.get(name).d_loss(REAL, FAKE)
    assert metrics["real_logit"].item() == pytest.approx(1.25)
    assert metrics["fake_logit"].item() == pytest.approx(-0.75)


def test_only_the_logistic_loss_logs_probabilities_d_real_and_d_fake() -> None:
    """d_real/d_fake are the mean sigmoid of D's logits (the probability of 'real'), which only
    means something for the logistic loss; the score-based losses do not log them."""
    _, metrics = LOSSES.get("nonsaturating").d_loss(REAL, FAKE)
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert metrics["d_real"].item() == pytest.approx((sigmoid(2.0) + sigmoid(0.5)) / 2)
    assert metrics["d_fake"].item() == pytest.approx((sigmoid(-2.0) + sigmoid(0.5)) / 2)
    for name in ("hinge", "wasserstein", "least_squares"):
        _, metrics = LOSSES.get(name).d_loss(REAL, FAKE)
        assert "d_real" not in metrics and "d_fake" not in metrics, name
    _, metrics = LOSSES.get("wasserstein").d_loss(REAL, FAKE)
    assert metrics["wasserstein"].item() == pytest.approx(2.0)


@pytest.mark.parametrize("name", ["nonsaturating", "hinge", "wasserstein", "least_squares"])
def test_objective_gradients_on_known_logits(name: str) -> None:
    """d loss / d logit per sample, by hand: catches a sign or a target flipped in one term."""
    real, fake = REAL.clone().requires_grad_(True), FAKE.clone().requires_grad_(True)
    objective = LOSSES.get(name)
    objective.d_loss(real, fake)[0].backward()
    fake_for_g = FAKE.clone().requires_grad_(True)
    objective.g_loss(fake_for_g)[0].backward()
    sig = torch.sigmoid
    expected = {
        # softplus'(x) = sigmoid(x); each term is a mean over 2 samples.
        "nonsaturating": (-sig(-REAL) / 2, sig(FAKE) / 2, -sig(-FAKE) / 2),
        # relu(1 - r): slope -1 where r < 1; relu(1 + f): slope 1 where f > -1.
        "hinge": (-(REAL < 1).float() / 2, (FAKE > -1).float() / 2, torch.full((2,), -0.5)),
        "wasserstein": (torch.full((2,), -0.5), torch.full((2,), 0.5), torch.full((2,), -0.5)),
        "least_squares": ((REAL - 1) / 2, FAKE / 2, (FAKE - 1) / 2),
    }[name]
    torch.testing.assert_close(real.grad, expected[0])
    torch.testing.assert_close(fake.grad, expected[1])
    torch.testing.assert_close(fake_for_g.grad, expected[2])


def test_nonsaturating_loss_stays_finite_for_huge_logits() -> None:
    huge = torch.tensor([1e4, -1e4])
    d_loss, _ = LOSSES.get("nonsaturating").d_loss(huge, -huge)
    g_loss, _ = LOSSES.get("nonsaturating").g_loss(huge)
    assert d_loss.item() == pytest.approx(1e4 / 2 * 2)  # one wrong sample on each side
    assert g_loss.item() == pytest.approx(1e4 / 2)


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


class QuadraticCritic(nn.Module):
    """D(x) = sum_j w_j x_j^2 + <v, x>: its input gradient 2 w * x + v changes from point to point,
    so a penalty taken at the wrong points (reals only, fakes only) gives another value."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(5)
        self.w = nn.Parameter(torch.rand(numel, generator=generator) + 0.5)
        self.v = nn.Parameter(torch.randn(numel, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return (self.w * flat.square()).sum(1) + flat @ self.v  # [B]


def _quadratic_gp_by_hand(critic: QuadraticCritic, points: torch.Tensor):
    """(penalty, mean norm, d penalty / d w, d penalty / d v) for the quadratic critic, no autograd."""
    x = points.detach().flatten(1)
    w, v = critic.w.detach(), critic.v.detach()
    grads = 2 * w * x + v  # [B, N]
    norms = grads.norm(dim=1)  # [B]
    penalty = (norms - 1).square().mean()
    # d/dp (|g| - 1)^2 = 2 (|g| - 1) g / |g| * dg/dp, with dg/dw = 2x and dg/dv = 1.
    outer = 2 * (norms - 1)[:, None] * grads / norms[:, None] / len(x)  # [B, N]
    return penalty, norms.mean(), (outer * 2 * x).sum(0), outer.sum(0)


def test_gradient_penalty_by_hand_on_a_quadratic_critic() -> None:
    torch.manual_seed(0)
    critic = QuadraticCritic(12)
    real, fake = torch.randn(6, 3, 2, 2), torch.randn(6, 3, 2, 2) + 2
    points = interpolate(real, fake, generator=torch.Generator().manual_seed(1))
    penalty, metrics = gradient_penalty(points, critic(points))
    expected, norm, grad_w, grad_v = _quadratic_gp_by_hand(critic, points)
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["gp"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["gp_grad_norm"].item() == pytest.approx(norm.item(), rel=1e-5)
    penalty.backward()  # create_graph=True: the penalty trains D
    torch.testing.assert_close(critic.w.grad, grad_w)
    torch.testing.assert_close(critic.v.grad, grad_v)
    # The gradient varies with position: at the reals alone the penalty is another number.
    on_reals, *_ = _quadratic_gp_by_hand(critic, real)
    assert abs(on_reals.item() - expected.item()) > 0.1 * expected.item()


def test_gradient_penalty_divides_the_fp32_loss_scale_out_again() -> None:
    critic = QuadraticCritic(4)
    points = torch.randn(3, 4).requires_grad_(True)
    plain, _ = gradient_penalty(points, critic(points))
    scaled, _ = gradient_penalty(points, critic(points), grad_scale=1024.0)
    assert scaled.item() == pytest.approx(plain.item(), rel=1e-6)


def test_interpolates_lie_between_real_and_fake_at_random_fractions() -> None:
    real, fake = torch.zeros(1000, 3), torch.ones(1000, 3)
    points = interpolate(real, fake)
    assert ((points >= 0) & (points <= 1)).all()
    assert torch.allclose(points, points[:, :1].expand_as(points))  # one alpha per sample
    fraction = points[:, 0]  # the share of `fake` in each point
    # Uniform on [0, 1]: neither the reals (alpha = 1) nor the fakes (alpha = 0) nor a constant.
    assert 0.45 < fraction.mean().item() < 0.55
    assert fraction.min().item() < 0.05 and fraction.max().item() > 0.95
    assert (fraction == 0).float().mean() < 0.01 and (fraction == 1).float().mean() < 0.01
    assert points.requires_grad and points.grad_fn is None  # a leaf: no gradient to G or the data


def test_interpolates_use_the_given_generator_and_detach_their_inputs() -> None:
    real = torch.randn(8, 1, 2, 2, requires_grad=True)
    fake = torch.randn(8, 1, 2, 2, requires_grad=True)
    first = interpolate(real, fake, generator=torch.Generator().manual_seed(3))
    again = interpolate(real, fake, generator=torch.Generator().manual_seed(3))
    other = interpolate(real, fake, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    # Each point is real + t (fake - real) for one t in [0, 1] per sample.
    t = ((first - real) / (fake - real)).detach().flatten(1)
    torch.testing.assert_close(t, t[:, :1].expand_as(t))
    assert ((t >= 0) & (t <= 1)).all()


def test_r1_by_hand_on_a_quadratic_critic() -> None:
    critic = QuadraticCritic(4)
    reals = torch.randn(5, 4).requires_grad_(True)
    penalty, metrics = r1_penalty(reals, critic(reals))
    grads = 2 * critic.w.detach() * reals.detach() + critic.v.detach()
    expected = grads.square().sum(1).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["r1"].item() == pytest.approx(expected.item(), rel=1e-5)
    scaled, _ = r1_penalty(reals, critic(reals), grad_scale=512.0)
    assert scaled.item() == pytest.approx(expected.item(), rel=1e-5)


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


def test_path_length_draws_its_own_noise_and_uses_the_default_decay() -> None:
    torch.manual_seed(0)
    matrix = torch.randn(6, 4)
    ws = torch.randn(3, 2, 3).requires_grad_(True)
    images = (ws.flatten(1) @ matrix).view(3, 1, 2, 2)
    pl_mean = torch.tensor(0.25)
    torch.manual_seed(7)
    noise = torch.randn(3, 1, 2, 2)
    torch.manual_seed(7)
    drawn, drawn_metrics = path_length_penalty(images, ws, pl_mean)
    given, given_metrics = path_length_penalty(images, ws, pl_mean, decay=0.01, noise=noise)
    assert drawn.item() == pytest.approx(given.item(), rel=1e-6)
    assert drawn_metrics["pl_mean"].item() == pytest.approx(given_metrics["pl_mean"].item())
    lengths = ((noise.flatten(1) / 2.0) @ matrix.t()).view(3, 2, 3).square().sum(2).mean(1).sqrt()
    assert given_metrics["pl_length"].item() == pytest.approx(lengths.mean().item(), rel=1e-5)
    scaled, _ = path_length_penalty(images, ws, pl_mean, noise=noise, grad_scale=256.0)
    assert scaled.item() == pytest.approx(given.item(), rel=1e-5)


def test_orthogonal_penalty_counts_off_diagonal_terms_only() -> None:
    weight = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # W W^T = [[1, 1], [1, 2]]
    penalty, metrics = orthogonal_penalty([weight, torch.eye(3) * 5])
    assert penalty.item() == pytest.approx(2.0)
    assert metrics["ortho"].item() == pytest.approx(2.0)
    conv = torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]]).view(3, 1, 2, 1)  # fan-in 2
    penalty, _ = orthogonal_penalty([conv])  # off-diagonal <w_i, w_j>: 2, 1, 0, twice each
    assert penalty.item() == pytest.approx(2 * (4 + 1 + 0))


def test_penalties_build_their_tensors_on_the_inputs_device() -> None:
    """On the meta device a tensor made on the CPU instead cannot be mixed in: the same mistake
    that would fail on a GPU is caught on this CPU-only machine."""
    weight = torch.empty(4, 3, device="meta")
    penalty, _ = orthogonal_penalty([weight])
    assert penalty.device.type == "meta"
    real = torch.empty(2, 1, 2, 2, device="meta")
    assert interpolate(real, real).device.type == "meta"


def test_path_length_on_non_square_half_precision_images_draws_float32_noise() -> None:
    torch.manual_seed(0)
    matrix = torch.randn(6, 8)
    ws = torch.randn(3, 2, 3).requires_grad_(True)
    images = (ws.flatten(1) @ matrix).view(3, 1, 2, 4).bfloat16()  # H * W = 8
    pl_mean = torch.tensor(0.0)
    torch.manual_seed(7)
    noise = torch.randn(3, 1, 2, 4)  # float32, as drawn inside
    torch.manual_seed(7)
    _, drawn = path_length_penalty(images, ws, pl_mean, decay=1.0)
    _, given = path_length_penalty(images, ws, pl_mean, decay=1.0, noise=noise)
    assert drawn["pl_length"].item() == given["pl_length"].item()
    jt_y = (noise.flatten(1) / 8**0.5) @ matrix.t()  # y = noise / sqrt(H * W)
    lengths = jt_y.view(3, 2, 3).square().sum(2).mean(1).sqrt()
    assert given["pl_length"].item() == pytest.approx(lengths.mean().item(), rel=2e-2)
