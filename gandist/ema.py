"""Exponential moving averages: of G's weights (for sampling and evaluation), and of D's mean
outputs (the anchors of the LeCam penalty)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class GeneratorEMA:
    """A frozen copy of G whose parameters trail G's with a half-life counted in images.

    After G has trained on `half_life_images` images, the EMA has moved half way to G's
    weights, whatever the number of GPUs or the per-GPU batch: the decay per update is
    0.5 ** (global_batch / half_life_images). Buffers (BN statistics, StyleGAN2's pl_mean and
    noise) are copied, not averaged. Registered with Accelerate for checkpointing.

    With `rampup` > 0 the half-life is at most `rampup` x the images G had trained on before
    the update (StyleGAN2-ADA's `ema_rampup`, 0.05 there): early in training the EMA follows G
    closely instead of averaging in the random initial weights, which for a BatchNorm
    generator also keeps the copied BN statistics true to the EMA's own activations. Without
    it, a 10000-image half-life at batch 64 still holds 37% of the initial weights after 225
    steps. The ramp depends only on the images seen, so a resumed run continues it exactly.
    """

    def __init__(self, generator: nn.Module, half_life_images: int, rampup: float = 0.0) -> None:
        if half_life_images <= 0:
            raise ValueError(f"half_life_images must be > 0, got {half_life_images}")
        if rampup < 0:
            raise ValueError(f"rampup must be >= 0, got {rampup}")
        self.half_life_images, self.rampup = half_life_images, rampup
        self.module = copy.deepcopy(generator).eval().requires_grad_(False)

    def half_life(self, images_seen: int) -> float:
        """The half-life in images after G trained on `images_seen` images (the ramp, if on)."""
        if self.rampup > 0:
            return min(float(self.half_life_images), self.rampup * images_seen)
        return float(self.half_life_images)

    def decay(self, num_images: int, images_seen: int | None = None) -> float:
        """The weight kept from the old average after G trained on `num_images` more images,
        having trained on `images_seen` before them (needed only with a ramp; None: no ramp)."""
        half_life = self.half_life_images if images_seen is None else self.half_life(images_seen)
        if half_life <= 0:
            return 0.0 if num_images > 0 else 1.0  # the ramp's start: the EMA copies G
        return 0.5 ** (num_images / half_life)

    @torch.no_grad()
    def update(self, generator: nn.Module, num_images: int, images_seen: int | None = None) -> None:
        """Move towards `generator` (the unwrapped module) after a step on `num_images` images;
        `images_seen`: the images G trained on before this step (for the ramp)."""
        beta = self.decay(num_images, images_seen)
        for (name, ema), (other, param) in zip(
            self.module.named_parameters(), generator.named_parameters(), strict=True
        ):
            assert name == other, f"EMA parameter {name} does not match generator {other}"
            ema.lerp_(param.detach().to(ema.dtype), 1.0 - beta)
        for ema_buffer, buffer in zip(self.module.buffers(), generator.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)


class LogitAnchors:
    """Moving averages of D's mean output on reals and on fakes (LeCam's a_R and a_F).

    Kept per rank on the device (no sync per step; a `rank_state` checkpoint component). The
    first update sets them, later ones move them by 1 - decay (0.99 in the paper's code).
    """

    def __init__(self, decay: float, device: torch.device | str = "cpu") -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.values = torch.zeros(2, device=device)  # [a_R, a_F]
        self.started = torch.zeros((), dtype=torch.bool, device=device)

    def to(self, device: torch.device | str) -> LogitAnchors:
        self.values, self.started = self.values.to(device), self.started.to(device)
        return self

    @torch.no_grad()
    def update(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        means = torch.stack([real_logits.float().mean(), fake_logits.float().mean()])
        moved = self.values.lerp(means, 1.0 - self.decay)
        self.values = torch.where(self.started, moved, means)
        self.started = torch.ones_like(self.started)

    @property
    def real(self) -> torch.Tensor:
        return self.values[0]

    @property
    def fake(self) -> torch.Tensor:
        return self.values[1]

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values.cpu(), "started": self.started.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.values.device
        self.values, self.started = state["values"].to(device), state["started"].to(device)
