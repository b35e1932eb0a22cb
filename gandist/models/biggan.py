"""BigGAN-style (Brock et al., 2019): shared class embedding, hierarchical latent, conditional BN.

The latent z is split into one chunk for the stem and one per G block; each block's
conditional BN sees [shared_embedding(y), z_chunk], so the class and the noise reach every
scale. Both networks are spectrally normalised; D is a ResNet with a projection head.
BigGAN's orthogonal regularisation of G is `reg.ortho_weight` (weights via `G.regularized_weights()`).
Widths: 4 x g_width channels in G blocks and 4 x d_width in D blocks (CIFAR BigGAN: 256).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gandist.errors import ConfigError
from gandist.models.config import ModelConfig
from gandist.models.layers import (
    GBlock,
    ProjectionHead,
    conv_weights,
    resnet_discriminator_blocks,
)
from gandist.registry import MODELS

SHARED_EMBEDDING_DIM = 128


def _num_blocks(resolution: int) -> int:
    return int(math.log2(resolution)) - 2


class BigGANGenerator(nn.Module):
    def __init__(
        self, latent_dim: int, width: int, resolution: int, channels: int, num_classes: int
    ) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        num_blocks = _num_blocks(resolution)
        self.chunk = latent_dim // (num_blocks + 1)
        self.ch = 4 * width
        self.shared = nn.Embedding(num_classes, SHARED_EMBEDDING_DIM)
        self.stem = spectral_norm(nn.Linear(self.chunk, 4 * 4 * self.ch))
        cond_dim = SHARED_EMBEDDING_DIM + self.chunk
        self.blocks = nn.ModuleList(
            [GBlock(self.ch, self.ch, cond_dim=cond_dim, spectral=True) for _ in range(num_blocks)]
        )
        self.out_norm = nn.BatchNorm2d(self.ch)
        self.to_image = spectral_norm(nn.Conv2d(self.ch, channels, 3, 1, 1))

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Hierarchical latent: chunk 0 feeds the stem, chunk i+1 conditions block i.
        chunks = z[:, : self.chunk * (len(self.blocks) + 1)].split(self.chunk, dim=1)
        shared = self.shared(labels)  # [B, 128]
        h = self.stem(chunks[0]).view(z.shape[0], self.ch, 4, 4)
        for block, chunk in zip(self.blocks, chunks[1:], strict=True):
            h = block(h, torch.cat([shared, chunk], dim=1))
        return torch.tanh(self.to_image(F.relu(self.out_norm(h))))  # [B, C, H, W]

    def regularized_weights(self) -> list[torch.Tensor]:
        """Weights for the orthogonal regulariser: convs and linears, not embeddings or BN."""
        return conv_weights(self.blocks) + conv_weights(self.stem) + conv_weights(self.to_image)


class BigGANDiscriminator(nn.Module):
    def __init__(self, width: int, resolution: int, channels: int, num_classes: int) -> None:
        super().__init__()
        ch = 4 * width
        self.blocks = resnet_discriminator_blocks(channels, ch, resolution)
        self.head = ProjectionHead(ch, num_classes)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(images), labels)  # [B]


def validate(cfg: ModelConfig, resolution: int, channels: int) -> None:
    if cfg.num_classes < 1:
        raise ConfigError(
            "model.name=biggan is class-conditional: set model.num_classes (10 for the glyphs)"
        )
    if resolution < 8 or resolution & (resolution - 1):
        raise ConfigError(
            f"model.name=biggan needs data.resolution to be a power of two >= 8, got {resolution}"
        )
    chunks = _num_blocks(resolution) + 1
    if cfg.latent_dim < chunks:
        raise ConfigError(
            f"model.name=biggan splits model.latent_dim into {chunks} chunks at {resolution} px: "
            f"it must be >= {chunks}, got {cfg.latent_dim}"
        )


@MODELS.register("biggan")
def build(cfg: ModelConfig, resolution: int, channels: int) -> tuple[nn.Module, nn.Module]:
    validate(cfg, resolution, channels)
    generator = BigGANGenerator(cfg.latent_dim, cfg.g_width, resolution, channels, cfg.num_classes)
    discriminator = BigGANDiscriminator(cfg.d_width, resolution, channels, cfg.num_classes)
    return generator, discriminator


build.validate = validate
