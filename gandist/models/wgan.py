"""WGAN (Arjovsky et al., 2017) and WGAN-GP (Gulrajani et al., 2017): DCGAN G, a DCGAN critic.

The two differ in how the critic is kept 1-Lipschitz: `wgan` clips its weights
(reg.weight_clip) and keeps BatchNorm; `wgan-gp` penalises its input gradient (reg.gp_weight),
which is per-sample, so its critic uses layer norm instead of BatchNorm, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from gandist.models.config import ModelConfig
from gandist.models.dcgan import DCGANGenerator, _init_weights, _num_stages
from gandist.models.dcgan import validate as dcgan_validate
from gandist.registry import MODELS


class WGANCritic(nn.Module):
    """DCGAN's discriminator with a choice of normalisation and an unbounded scalar output."""

    def __init__(self, width: int, resolution: int, channels: int, norm: str) -> None:
        super().__init__()
        stages = _num_stages(resolution)
        widths = [width * 2**i for i in range(stages)]
        layers: list[nn.Module] = [
            nn.Conv2d(channels, widths[0], 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            # GroupNorm with one group is layer norm over (C, H, W) of each sample.
            norm_layer = nn.BatchNorm2d(fan_out) if norm == "batch" else nn.GroupNorm(1, fan_out)
            layers += [
                nn.Conv2d(fan_in, fan_out, 4, 2, 1),
                norm_layer,
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 0))  # [B, 1, 1, 1] critic values
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).flatten()  # [B]


def _build(cfg: ModelConfig, resolution: int, channels: int, norm: str):
    dcgan_validate(cfg, resolution, channels)
    generator = DCGANGenerator(cfg.latent_dim, cfg.g_width, resolution, channels)
    return generator, WGANCritic(cfg.d_width, resolution, channels, norm)


@MODELS.register("wgan")
def build_wgan(cfg: ModelConfig, resolution: int, channels: int) -> tuple[nn.Module, nn.Module]:
    return _build(cfg, resolution, channels, norm="batch")


@MODELS.register("wgan-gp")
def build_wgan_gp(cfg: ModelConfig, resolution: int, channels: int) -> tuple[nn.Module, nn.Module]:
    return _build(cfg, resolution, channels, norm="layer")


build_wgan.validate = dcgan_validate
build_wgan_gp.validate = dcgan_validate
