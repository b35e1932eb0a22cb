"""Learning-rate schedules as multipliers of the configured rates, per training step."""

from __future__ import annotations

import math

import torch


def lr_multiplier(
    step: int, schedule: str, warmup_steps: int, total_steps: int, decay_after_steps: int = 0
) -> float:
    """The factor applied to the base learning rate at `step` (0-based).

    A linear warm-up from 1/warmup_steps to 1 first, then constant, linear decay to 0, or a
    cosine decay to 0 at `total_steps`. The decay starts `decay_after_steps` after the warm-up
    (CycleGAN: the full rate for the first half of training, then linearly to 0).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    start = warmup_steps + decay_after_steps
    progress = min(1.0, max(0, step - start) / max(1, total_steps - start))
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr schedule {schedule!r}; choose constant, linear or cosine")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    warmup_steps: int,
    total_steps: int,
    decay_after_steps: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per training step.

    Deliberately not passed through `accelerator.prepare`: Accelerate's scheduler wrapper steps
    the schedule once per process per call, which would run it N times too fast on N ranks.
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_multiplier(step, schedule, warmup_steps, total_steps, decay_after_steps),
    )
