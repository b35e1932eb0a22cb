"""Class-conditional GAN: DCGAN-shaped G with class-conditional BN, projection discriminator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gandist.errors import ConfigError
from gandist.models.config import ModelConfig
from gandist.models.dcgan import _num_stages
from gandist.models.layers import ConditionalBatchNorm2d, ProjectionHead
from gandist.registry import MODELS


class ConditionalGenerator(nn.Module):
    """G(z, labels): transposed-conv stages whose BN gain and bias depend on the class."""

    def __init__(
        self, latent_dim: int, width: int, resolution: int, channels: int, num_classes: int
    ) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        stages = _num_stages(resolution)
        widths = [width * 2 ** (stages - 1 - i) for i in range(stages)]  # e.g. [4w, 2w, w] at 32 px
        self.stem = nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False)  # [B, 4w, 4, 4]
        self.norms = nn.ModuleList([ConditionalBatchNorm2d(widths[0], num_classes)])
        self.ups = nn.ModuleList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            self.ups.append(nn.ConvTranspose2d(fan_in, fan_out, 4, 2, 1, bias=False))
            self.norms.append(ConditionalBatchNorm2d(fan_out, num_classes))
        self.to_image = nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1)
        # DCGAN's N(0, 0.02) for the convolutions (the conditional BN gains and biases stay
        # zero: plain BN at the start). PyTorch's default init would give the last layer
        # weights of std ~0.14 over 256 inputs per pixel: pre-tanh std ~1.5, a quarter of the
        # pixels saturated, and a first grid of black-and-white noise that D tells apart at
        # once (its hinge loss was 0 by step 60 while G still drew noise).
        for module in self.modules():
            if isinstance(module, nn.ConvTranspose2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(labels, self.num_classes).to(z.dtype)  # [B, num_classes]
        h = F.relu(self.norms[0](self.stem(z[:, :, None, None]), onehot))
        for up, norm in zip(self.ups, self.norms[1:], strict=True):
            h = F.relu(norm(up(h), onehot))
        return torch.tanh(self.to_image(h))  # [B, C, H, W]


class ProjectionDiscriminator(nn.Module):
    """D(images, labels): spectrally normalised strided convs, then a projection head."""

    def __init__(self, width: int, resolution: int, channels: int, num_classes: int) -> None:
        super().__init__()
        stages = _num_stages(resolution)
        widths = [width * 2**i for i in range(stages)]  # e.g. [w, 2w, 4w] at 32 px
        layers: list[nn.Module] = []
        fan_in = channels
        for fan_out in widths:
            layers += [
                spectral_norm(nn.Conv2d(fan_in, fan_out, 3, 1, 1)),
                nn.LeakyReLU(0.1),
                spectral_norm(nn.Conv2d(fan_out, fan_out, 4, 2, 1)),  # halves H and W
                nn.LeakyReLU(0.1),
            ]
            fan_in = fan_out
        self.trunk = nn.Sequential(*layers)  # [B, 4w, 4, 4] at any resolution
        self.head = ProjectionHead(widths[-1], num_classes)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images), labels)  # [B]


def require_classes(cfg: ModelConfig) -> None:
    """A class-conditional family is built with model.num_classes >= 1."""
    if cfg.num_classes < 1:
        raise ConfigError(
            f"model.name={cfg.name} is class-conditional: set model.num_classes (10 for the "
            "glyphs), or leave it 0 for `gandist train` to take it from the shards"
        )


def validate(cfg: ModelConfig, resolution: int, channels: int) -> None:
    # num_classes=0 is allowed here: `gandist train` takes it from the shards before building.
    if resolution < 8 or resolution & (resolution - 1):
        raise ConfigError(
            f"model.name={cfg.name} needs data.resolution to be a power of two >= 8, got {resolution}"
        )


@MODELS.register("conditional")
def build(cfg: ModelConfig, resolution: int, channels: int) -> tuple[nn.Module, nn.Module]:
    validate(cfg, resolution, channels)
    require_classes(cfg)
    generator = ConditionalGenerator(
        cfg.latent_dim, cfg.g_width, resolution, channels, cfg.num_classes
    )
    discriminator = ProjectionDiscriminator(cfg.d_width, resolution, channels, cfg.num_classes)
    return generator, discriminator


build.validate = validate
build.conditional = True
