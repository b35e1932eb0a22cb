"""Drawing samples from a trained generator, without Accelerate or a process group."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from gandist.checkpoint import CONFIG_FILE, load_generator_weights
from gandist.config import Config, load_config
from gandist.registry import MODELS
from gandist.tracking import image_grid


def generate(
    generator: nn.Module, latents: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Images [B, C, H, W] from latents [B, latent_dim]; class labels [B] for conditional models.

    The one place that knows how a generator is called, for grids, evaluation and export.
    """
    if labels is None:
        return generator(latents)
    return generator(latents, labels)


def load_generator(run_or_checkpoint: str | os.PathLike) -> tuple[nn.Module, Config]:
    """The generator of a run (its newest checkpoint) or of one checkpoint, in eval mode."""
    weights, folder = load_generator_weights(run_or_checkpoint)
    cfg = load_config(folder / CONFIG_FILE)
    generator, _ = MODELS.get(cfg.model.name)(cfg.model, cfg.data.resolution, cfg.data.channels)
    generator.load_state_dict(weights)
    return generator.eval(), cfg


@torch.no_grad()
def sample_grid(
    run_or_checkpoint: str | os.PathLike, num: int, out: str | os.PathLike, seed: int = 0
) -> Path:
    """Write a grid of `num` samples drawn with `seed` to `out` (a PNG)."""
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    generator, cfg = load_generator(run_or_checkpoint)
    latents = torch.randn(num, cfg.model.latent_dim, generator=torch.Generator().manual_seed(seed))
    image_grid(generate(generator, latents), out)
    return Path(out)
