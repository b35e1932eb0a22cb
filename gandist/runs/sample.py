"""Drawing samples from a trained generator, without Accelerate or a process group."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from gandist.models import generate
from gandist.registry import MODELS
from gandist.rundir import CONFIG_FILE, load_generator_weights
from gandist.tracking import image_grid
from gandist.training.config import Config, load_config


def load_generator(run_or_checkpoint: str | os.PathLike) -> tuple[nn.Module, Config]:
    """The generator of a run (its newest checkpoint) or of one checkpoint, in eval mode."""
    weights, folder = load_generator_weights(run_or_checkpoint)
    cfg = load_config(folder / CONFIG_FILE)
    generator, _ = MODELS.get(cfg.model.name)(cfg.model, cfg.data.resolution, cfg.data.channels)
    generator.load_state_dict(weights)
    return generator.eval(), cfg


def class_labels(generator: nn.Module, num: int, class_index: int | None) -> torch.Tensor | None:
    """Labels [num] for a grid: all `class_index`, or every class in turn; None if unconditional.

    Raises ValueError for a class the generator does not have, or any class for an
    unconditional generator.
    """
    num_classes = int(getattr(generator, "num_classes", 0))
    if not num_classes:
        if class_index is not None:
            raise ValueError(
                f"--class {class_index} needs a class-conditional model; this one is unconditional"
            )
        return None
    if class_index is None:
        return torch.arange(num) % num_classes
    if not 0 <= class_index < num_classes:
        raise ValueError(
            f"--class must be in [0, {num_classes - 1}] for this model, got {class_index}"
        )
    return torch.full((num,), class_index, dtype=torch.long)


@torch.no_grad()
def sample_grid(
    run_or_checkpoint: str | os.PathLike,
    num: int,
    out: str | os.PathLike,
    seed: int = 0,
    class_index: int | None = None,
    truncation: float = 1.0,
) -> Path:
    """Write a grid of `num` samples drawn with `seed` to `out` (a PNG).

    Conditional models draw class `class_index`, or cycle through all classes when it is None.
    `truncation` < 1 applies the truncation trick (gandist.models.truncation).
    """
    from gandist.models.truncation import check_psi

    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    check_psi(truncation)
    generator, cfg = load_generator(run_or_checkpoint)
    labels = class_labels(generator, num, class_index)
    latents = torch.randn(num, cfg.model.latent_dim, generator=torch.Generator().manual_seed(seed))
    image_grid(generate(generator, latents, labels, truncation), out)
    return Path(out)
