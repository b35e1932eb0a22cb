"""The vanilla MLP GAN of Goodfellow et al. (2014): fully connected G and D on flattened images."""

from __future__ import annotations

import math

import torch
from torch import nn

from gandist.models.config import ModelConfig
from gandist.registry import MODELS


class MLPGenerator(nn.Module):
    def __init__(self, latent_dim: int, width: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = image_shape
        hidden = [width * 4, width * 8, width * 16]
        layers: list[nn.Module] = []
        fan_in = latent_dim
        for units in hidden:
            layers += [nn.Linear(fan_in, units), nn.LeakyReLU(0.2, inplace=True)]
            fan_in = units
        layers += [nn.Linear(fan_in, math.prod(image_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.image_shape)  # [B, C, H, W]


class MLPDiscriminator(nn.Module):
    def __init__(self, width: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        hidden = [width * 16, width * 8, width * 4]
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(image_shape)
        for units in hidden:
            layers += [nn.Linear(fan_in, units), nn.LeakyReLU(0.2, inplace=True)]
            fan_in = units
        # No sigmoid: objectives take logits, which is numerically safer under autocast.
        layers.append(nn.Linear(fan_in, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).squeeze(1)  # [B]


@MODELS.register("mlp")
def build(cfg: ModelConfig, resolution: int, channels: int) -> tuple[nn.Module, nn.Module]:
    shape = (channels, resolution, resolution)
    return MLPGenerator(cfg.latent_dim, cfg.g_width, shape), MLPDiscriminator(cfg.d_width, shape)
