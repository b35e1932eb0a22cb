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
    Metrics are detached scalars for logging.
    """

    d_loss: Callable[[torch.Tensor, torch.Tensor], LossAndMetrics]
    g_loss: Callable[[torch.Tensor], LossAndMetrics]


def nonsaturating_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> LossAndMetrics:
    # BCE with targets 1 (real) and 0 (fake): -log sigmoid(r) - log(1 - sigmoid(f)),
    # written with softplus so it stays finite for large logits and under autocast.
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    metrics = {
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
