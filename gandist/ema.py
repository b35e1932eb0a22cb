"""Generator EMA: an exponential moving average of G's weights, used for sampling and evaluation."""

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
    """

    def __init__(self, generator: nn.Module, half_life_images: int) -> None:
        if half_life_images <= 0:
            raise ValueError(f"half_life_images must be > 0, got {half_life_images}")
        self.half_life_images = half_life_images
        self.module = copy.deepcopy(generator).eval().requires_grad_(False)

    def decay(self, num_images: int) -> float:
        """The weight kept from the old average after G trained on `num_images` more images."""
        return 0.5 ** (num_images / self.half_life_images)

    @torch.no_grad()
    def update(self, generator: nn.Module, num_images: int) -> None:
        """Move towards `generator` (the unwrapped module) after a step on `num_images` images."""
        beta = self.decay(num_images)
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
