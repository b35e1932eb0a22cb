"""Adversarial objectives as pure functions: logits in, (loss, metrics) out; no state, no backward."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gandist.registry import LOSSES

Metrics = dict[str, torch.Tensor]
LossAndMetrics = tuple[torch.Tensor, Metrics]


@dataclass(frozen=True)
class Objective:
    """The two halves of a GAN objective.

    `d_loss(real_logits, fake_logits)` is minimised by the discriminator and
    `g_loss(fake_logits)` by the generator. Logits are raw D outputs of shape [B].
    Metrics are detached scalars for logging: every D loss logs `real_logit` and `fake_logit`,
    the mean raw D output on each side; only the logistic (nonsaturating) loss, whose D output
    is a log-odds, also logs `d_real` and `d_fake`, the mean probability D gives each side of
    being real. Hinge, least-squares and Wasserstein outputs are scores, not log-odds: a sigmoid
    of them would be a number that means nothing.
    """

    d_loss: Callable[[torch.Tensor, torch.Tensor], LossAndMetrics]
    g_loss: Callable[[torch.Tensor], LossAndMetrics]


def _mean_logits(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> Metrics:
    return {"real_logit": real_logits.mean().detach(), "fake_logit": fake_logits.mean().detach()}


def nonsaturating_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> LossAndMetrics:
    # BCE with targets 1 (real) and 0 (fake): -log sigmoid(r) - log(1 - sigmoid(f)),
    # written with softplus so it stays finite for large logits and under autocast.
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    metrics = _mean_logits(real_logits, fake_logits) | {
        "d_real": torch.sigmoid(real_logits).mean().detach(),
        "d_fake": torch.sigmoid(fake_logits).mean().detach(),
    }
    return loss, metrics


def nonsaturating_g_loss(fake_logits: torch.Tensor) -> LossAndMetrics:
    # Goodfellow et al.'s non-saturating form: maximise log D(G(z)) instead of minimising
    # log(1 - D(G(z))), whose gradient vanishes while D easily rejects early fakes.
    loss = F.softplus(-fake_logits.float()).mean()
    return loss, {}


NONSATURATING = LOSSES.register("nonsaturating")(
    Objective(d_loss=nonsaturating_d_loss, g_loss=nonsaturating_g_loss)
)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> LossAndMetrics:
    # Geometric GAN / SNGAN: a margin of 1 on each side, so D stops pushing logits it already
    # classifies confidently and spends its capacity on the hard samples.
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    loss = F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return loss, _mean_logits(real_logits, fake_logits)


def hinge_g_loss(fake_logits: torch.Tensor) -> LossAndMetrics:
    return -fake_logits.float().mean(), {}


def wasserstein_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> LossAndMetrics:
    # The critic maximises E[D(real)] - E[D(fake)], an estimate of the Wasserstein-1 distance
    # when D is 1-Lipschitz (weight clipping or a gradient penalty keeps it so).
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    distance = real_logits.mean() - fake_logits.mean()
    return -distance, _mean_logits(real_logits, fake_logits) | {"wasserstein": distance.detach()}


def wasserstein_g_loss(fake_logits: torch.Tensor) -> LossAndMetrics:
    return -fake_logits.float().mean(), {}


def least_squares_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> LossAndMetrics:
    # LSGAN (Mao et al., 2017) with targets 1 (real) and 0 (fake); the 1/2 is the paper's.
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    loss = 0.5 * ((real_logits - 1.0).square().mean() + fake_logits.square().mean())
    return loss, _mean_logits(real_logits, fake_logits)


def least_squares_g_loss(fake_logits: torch.Tensor) -> LossAndMetrics:
    return 0.5 * (fake_logits.float() - 1.0).square().mean(), {}


HINGE = LOSSES.register("hinge")(Objective(d_loss=hinge_d_loss, g_loss=hinge_g_loss))
WASSERSTEIN = LOSSES.register("wasserstein")(
    Objective(d_loss=wasserstein_d_loss, g_loss=wasserstein_g_loss)
)
LEAST_SQUARES = LOSSES.register("least_squares")(
    Objective(d_loss=least_squares_d_loss, g_loss=least_squares_g_loss)
)


# ---- penalties -------------------------------------------------------------------------------
# Each takes a graph built by the caller (inputs that require grad and the outputs computed from
# them) and differentiates it with autograd.grad(create_graph=True). The caller builds that graph
# on the rank's local module, not its DDP wrapper, and adds the penalty to the normal loss, so a
# single backward carries it and DDP all-reduces the summed gradient once.
#
# `grad_scale` is the fp16 loss scale: outputs are multiplied by it before differentiating, so
# small input gradients do not flush to zero in fp16, and the gradients are divided by it again
# before the penalty is formed, so the penalty is computed on unscaled gradients. An overflow
# makes the penalty inf, which the caller's GradScaler then sees and skips the step for.


def _input_gradients(
    outputs: torch.Tensor, inputs: torch.Tensor, grad_scale: float
) -> torch.Tensor:
    (grads,) = torch.autograd.grad(
        outputs.float().sum() * grad_scale, inputs, create_graph=True, only_inputs=True
    )
    return grads.float() / grad_scale


def interpolate(
    real_images: torch.Tensor, fake_images: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random points on the lines between real and fake pairs (WGAN-GP), requiring grad."""
    alpha = torch.rand(
        real_images.shape[0], *([1] * (real_images.dim() - 1)),
        device=real_images.device, generator=generator,
    )  # fmt: skip
    mixed = alpha * real_images.detach().float() + (1 - alpha) * fake_images.detach().float()
    return mixed.requires_grad_(True)


def gradient_penalty(
    inputs: torch.Tensor, logits: torch.Tensor, grad_scale: float = 1.0
) -> LossAndMetrics:
    """WGAN-GP (Gulrajani et al., 2017): mean over the batch of (|grad_x D(x)|_2 - 1)^2.

    `inputs` [B, ...] are the interpolates (see `interpolate`) and `logits` [B] = D(inputs).
    Not weighted: the caller multiplies by its lambda.
    """
    grads = _input_gradients(logits, inputs, grad_scale)
    norms = grads.flatten(1).norm(2, dim=1)  # [B]
    penalty = (norms - 1.0).square().mean()
    return penalty, {"gp": penalty.detach(), "gp_grad_norm": norms.mean().detach()}


def r1_penalty(
    real_images: torch.Tensor, real_logits: torch.Tensor, grad_scale: float = 1.0
) -> LossAndMetrics:
    """R1 (Mescheder et al., 2018): mean over real images of |grad_x D(x)|_2^2.

    Not weighted: the caller multiplies by gamma/2 (and by its interval when applied lazily).
    """
    grads = _input_gradients(real_logits, real_images, grad_scale)
    penalty = grads.flatten(1).square().sum(1).mean()
    return penalty, {"r1": penalty.detach()}


def path_length_penalty(
    images: torch.Tensor,
    ws: torch.Tensor,
    pl_mean: torch.Tensor,
    decay: float = 0.01,
    grad_scale: float = 1.0,
    noise: torch.Tensor | None = None,
) -> LossAndMetrics:
    """StyleGAN2's path-length regulariser: (|J_w^T y|_2 - a)^2 with y ~ N(0, I)/sqrt(H*W).

    `images` [B, C, H, W] = synthesis(ws), `ws` [B, num_ws, w_dim]; `pl_mean` is the running
    target a. Returns the penalty and, in metrics, the updated target `pl_mean` (to store).
    """
    if noise is None:
        noise = torch.randn_like(images, dtype=torch.float32)
    noise = noise / (images.shape[2] * images.shape[3]) ** 0.5
    grads = _input_gradients(images.float() * noise, ws, grad_scale)  # [B, num_ws, w_dim]
    lengths = grads.square().sum(2).mean(1).sqrt()  # [B]
    new_mean = pl_mean.float().lerp(lengths.mean().detach(), decay)
    penalty = (lengths - new_mean).square().mean()
    return penalty, {"pl_length": lengths.mean().detach(), "pl_mean": new_mean}


def orthogonal_penalty(weights: list[torch.Tensor]) -> LossAndMetrics:
    """BigGAN's orthogonal regularisation: sum over W of |W W^T * (1 - I)|_F^2.

    Each weight is flattened to [out, fan_in]; only off-diagonal terms are penalised, so the
    filters are pushed towards orthogonality without constraining their norms.
    """
    total = torch.zeros((), device=weights[0].device)
    for weight in weights:
        flat = weight.float().flatten(1)
        gram = flat @ flat.t()
        off_diagonal = gram * (1.0 - torch.eye(gram.shape[0], device=gram.device))
        total = total + off_diagonal.square().sum()
    return total, {"ortho": total.detach()}


def lecam_penalty(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    anchor_real: torch.Tensor,
    anchor_fake: torch.Tensor,
) -> LossAndMetrics:
    """LeCam regularisation (Tseng et al., 2021), as in the authors' code: D's outputs on reals
    are pulled down towards the moving average of its fake outputs, and fakes up towards that of
    its reals, only where they are beyond it: E[relu(D(x) - a_F)^2] + E[relu(a_R - D(G(z)))^2].
    Logits [B]; anchors are detached scalars (gandist.ema.LogitAnchors)."""
    penalty = (
        F.relu(real_logits.float() - anchor_fake).pow(2).mean()
        + F.relu(anchor_real - fake_logits.float()).pow(2).mean()
    )
    return penalty, {"lecam": penalty.detach()}


def mode_seeking_penalty(
    images: torch.Tensor, latents: torch.Tensor, eps: float = 1e-5
) -> LossAndMetrics:
    """Mode-seeking term for G (MSGAN, Mao et al., 2019), as in the authors' code: the batch's
    two halves pair up, and G is penalised by 1 / (mean |G(z1) - G(z2)| / mean |z1 - z2| + eps),
    so two latents far apart must give images far apart: collapsing onto a few modes costs.
    Images [B, ...], latents [B, D], B >= 2 (an odd last sample is left out)."""
    half = images.shape[0] // 2
    if half == 0:
        raise ValueError("the mode-seeking term needs a batch of at least 2 per rank")
    image_gap = (images[:half] - images[half : 2 * half]).float().abs().mean()
    latent_gap = (latents[:half] - latents[half : 2 * half]).float().abs().mean()
    ratio = image_gap / latent_gap
    return 1.0 / (ratio + eps), {"mode_seeking_ratio": ratio.detach()}
