"""Several discriminators against one generator (model.num_discriminators, model.multi_d).

A remedy for mode collapse: with `scales` (pix2pixHD, Wang et al., 2018) discriminator k judges
the image average-pooled 2^k times, so a coarse D keeps pressing on the global shape of a sample
(which digit it is) while the full-resolution one judges strokes; with `ensemble` every D sees
the same image from its own initialisation (GMAN, Durugkar et al., 2017, averaged). Losses are
the mean over discriminators, so one D's gradient weighs as it would alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gandist.data.config import DataConfig
from gandist.errors import ConfigError
from gandist.models.config import ModelConfig
from gandist.registry import MODELS

FIRST = "discriminator"

Part = tuple[torch.Tensor, dict[str, torch.Tensor]]


def discriminator_names(num: int) -> tuple[str, ...]:
    """("discriminator", "discriminator_1", ...): the first keeps the one-D name, so a run with
    one discriminator checkpoints exactly what it always did."""
    return (FIRST, *(f"{FIRST}_{k}" for k in range(1, num)))


def downsampling(k: int, mode: str) -> int:
    """How many times discriminator k's input is average-pooled: 2^k for scales, else 1."""
    return 2**k if mode == "scales" else 1


def build_extra_discriminators(
    model: ModelConfig, resolution: int, channels: int
) -> list[nn.Module]:
    """Discriminators 1 .. num - 1 of the family, each built for the resolution it sees (the
    generator the family builder makes beside each is dropped)."""
    build = MODELS.get(model.name)
    extras = []
    for k in range(1, model.num_discriminators):
        _, discriminator = build(model, resolution // downsampling(k, model.multi_d), channels)
        extras.append(discriminator)
    return extras


def view(images: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    """What discriminator k sees of images [B, C, H, W]: average-pooled by 2^k (scales), or them."""
    factor = downsampling(k, mode)
    return images if factor == 1 else F.avg_pool2d(images, factor)


def average(parts: list[Part]) -> Part:
    """(loss, metrics) averaged over discriminators; with one, that one unchanged."""
    if len(parts) == 1:
        return parts[0]
    loss = torch.stack([part[0].float() for part in parts]).mean()
    keys = set.intersection(*(set(metrics) for _, metrics in parts))
    return loss, {
        key: torch.stack([metrics[key].float() for _, metrics in parts]).mean() for key in keys
    }


def check_multi_d(model: ModelConfig, data: DataConfig, algorithm: str) -> None:
    """Refuse, in one line, a set of discriminators that cannot be built or trained."""
    num, mode = model.num_discriminators, model.multi_d
    if num == 1:
        return
    if algorithm != "adversarial":
        raise ConfigError(
            f"model.num_discriminators={num} works with train.algorithm=adversarial; "
            f"train.algorithm={algorithm} has its own discriminators: set it to 1"
        )
    if mode == "scales" and data.kind != "image":
        raise ConfigError(
            f"model.multi_d=scales downsamples images, and data.kind={data.kind}: use "
            "model.multi_d=ensemble (every D sees the whole clip) or model.num_discriminators=1"
        )
    if mode == "scales" and not _takes_scales(model, data, num):
        fits = next(n for n in range(num - 1, 0, -1) if _takes_scales(model, data, n))
        smallest = data.resolution // downsampling(num - 1, mode)
        raise ConfigError(
            f"model.num_discriminators={num} with model.multi_d=scales gives the last D "
            f"{smallest} px images (data.resolution={data.resolution} pooled "
            f"{downsampling(num - 1, mode)} times), too small for model.name={model.name}: "
            f"use model.num_discriminators<={fits} or model.multi_d=ensemble"
        )


def _takes_scales(model: ModelConfig, data: DataConfig, num: int) -> bool:
    """Whether the family builds a D for the smallest scale of `num` discriminators."""
    smallest = data.resolution // downsampling(num - 1, "scales")
    validate = getattr(MODELS.get(model.name), "validate", None)
    if smallest < 4:
        return False
    try:
        if validate is not None:
            validate(model, smallest, data.channels)
    except (ValueError, ConfigError):
        return False
    return True
