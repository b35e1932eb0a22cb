"""DCGAN (Radford et al., 2016): strided transposed convolutions in G, strided convolutions in D."""

from __future__ import annotations

import math

import torch
from torch import nn

from gandist.errors import ConfigError
from gandist.models.config import ModelConfig
from gandist.models.layers import MinibatchStddev
from gandist.registry import MODELS


def _num_stages(resolution: int) -> int:
    # G starts from a 4x4 map and doubles it per stage until it reaches the resolution.
    return int(math.log2(resolution)) - 2


def _init_weights(module: nn.Module) -> None:
    # The DCGAN paper's initialisation: N(0, 0.02) for convolutions, N(1, 0.02) for BN scales.
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, width: int, resolution: int, channels: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        stages = _num_stages(resolution)
        widths = [width * 2 ** (stages - 1 - i) for i in range(stages)]  # e.g. [4w, 2w, w] at 32 px
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False),  # [B, 4w, 4, 4]
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.ConvTranspose2d(fan_in, fan_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(fan_out),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])  # [B, C, H, W]


class DCGANDiscriminator(nn.Module):
    def __init__(self, width: int, resolution: int, channels: int, mbstd_group: int = 0) -> None:
        super().__init__()
        stages = _num_stages(resolution)
        widths = [width * 2**i for i in range(stages)]  # e.g. [w, 2w, 4w] at 32 px
        # No BN on the first layer, as in the paper: it would normalise away the input statistics.
        layers: list[nn.Module] = [
            nn.Conv2d(channels, widths[0], 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Conv2d(fan_in, fan_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(fan_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        if mbstd_group:  # one more channel on the 4x4 map: the spread of features in the group
            layers.append(MinibatchStddev(mbstd_group))
        head_in = widths[-1] + (1 if mbstd_group else 0)
        layers.append(nn.Conv2d(head_in, 1, 4, 1, 0, bias=False))  # [B, 1, 1, 1] logits
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).flatten()  # [B]


def validate(cfg: ModelConfig, resolution: int, channels: int) -> None:
    if resolution < 8 or resolution & (resolution - 1):
        raise ConfigError(
            f"model.name=dcgan needs data.resolution to be a power of two >= 8, got {resolution}"
        )


@MODELS.register("dcgan")
def build(cfg: ModelConfig, resolution: int, channels: int) -> tuple[nn.Module, nn.Module]:
    validate(cfg, resolution, channels)
    generator = DCGANGenerator(cfg.latent_dim, cfg.g_width, resolution, channels)
    discriminator = DCGANDiscriminator(cfg.d_width, resolution, channels, cfg.minibatch_stddev)
    return generator, discriminator


build.validate = validate
