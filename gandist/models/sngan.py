"""SNGAN (Miyato et al., 2018): ResNet G with BatchNorm, ResNet D with spectral normalisation.

Train it with the hinge loss (configs/sngan.yaml). Widths: G blocks have 4 x g_width channels
and D blocks 2 x d_width (the paper's 256 and 128 at the default widths of 64).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gandist.errors import ConfigError
from gandist.models.config import ModelConfig
from gandist.models.layers import GBlock, ProjectionHead, resnet_discriminator_blocks
from gandist.registry import MODELS


class ResNetGenerator(nn.Module):
    def __init__(self, latent_dim: int, width: int, resolution: int, channels: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.ch = 4 * width
        self.stem = nn.Linear(latent_dim, 4 * 4 * self.ch)  # [B, ch, 4, 4]
        num_blocks = int(math.log2(resolution)) - 2
        self.blocks = nn.ModuleList([GBlock(self.ch, self.ch) for _ in range(num_blocks)])
        self.out_norm = nn.BatchNorm2d(self.ch)
        self.to_image = nn.Conv2d(self.ch, channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.stem(z).view(z.shape[0], self.ch, 4, 4)
        for block in self.blocks:
            h = block(h)
        return torch.tanh(self.to_image(F.relu(self.out_norm(h))))  # [B, C, H, W]


class ResNetDiscriminator(nn.Module):
    def __init__(self, width: int, resolution: int, channels: int) -> None:
        super().__init__()
        ch = 2 * width
        self.blocks = resnet_discriminator_blocks(channels, ch, resolution)
        self.head = ProjectionHead(ch)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(images))  # [B]


def validate(cfg: ModelConfig, resolution: int, channels: int) -> None:
    if resolution < 8 or resolution & (resolution - 1):
        raise ConfigError(
            f"model.name={cfg.name} needs data.resolution to be a power of two >= 8, got {resolution}"
        )


@MODELS.register("sngan")
def build(cfg: ModelConfig, resolution: int, channels: int) -> tuple[nn.Module, nn.Module]:
    validate(cfg, resolution, channels)
    generator = ResNetGenerator(cfg.latent_dim, cfg.g_width, resolution, channels)
    return generator, ResNetDiscriminator(cfg.d_width, resolution, channels)


build.validate = validate
