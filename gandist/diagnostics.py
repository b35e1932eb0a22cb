"""Cheap training-health signals computed from tensors the training step already holds."""

from __future__ import annotations

import torch


def sample_diversity(images: torch.Tensor) -> torch.Tensor:
    """Mean pairwise L2 distance between the images of a batch, per pixel (RMS), as a scalar.

    A cheap mode-collapse signal: it falls towards 0 when G maps different latents to the same
    image. Compare it with the same measure on a real batch (`train/real_diversity`).
    """
    # At most 16 images (120 pairs): the signal stays cheap at any batch size.
    flat = images[:16].detach().float().flatten(1)  # [B, C*H*W]
    if flat.shape[0] < 2:
        return torch.zeros((), device=images.device)
    return torch.pdist(flat).mean() / flat.shape[1] ** 0.5
