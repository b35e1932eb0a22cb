"""BigGAN-style (Brock et al., 2019): shared class embedding, hierarchical latent, conditional BN.

The latent z is split into one chunk for the stem and one per G block; each block's
conditional BN sees [shared_embedding(y), z_chunk], so the class and the noise reach every
scale. Both networks are spectrally normalised; D is a ResNet with a projection head.
BigGAN's orthogonal regularisation of G is `reg.ortho_weight` (weights via `G.regularized_weights()`).
Widths: 4 x g_width channels in G blocks and 4 x d_width in D blocks (CIFAR BigGAN: 256).
Self-attention (SAGAN's non-local block, `layers.SelfAttention`) follows the G block that
outputs `model.attention_resolution` and the first D block that outputs it, as BigGAN places
it (64 at 128 px in the paper); 0 leaves it out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gandist.errors import ConfigError
from gandist.models.conditional import require_classes
from gandist.models.config import ModelConfig
from gandist.models.layers import (
    GBlock,
    GuardedWeights,
    ProjectionHead,
    SelfAttention,
    conv_weights,
    resnet_discriminator_blocks,
)
from gandist.registry import MODELS

SHARED_EMBEDDING_DIM = 128


def _num_blocks(resolution: int) -> int:
    return int(math.log2(resolution)) - 2


def generator_resolutions(resolution: int) -> list[int]:
    """The side of each G block's output: 8, 16, ..., resolution."""
    return [2 ** (i + 3) for i in range(_num_blocks(resolution))]


def discriminator_resolutions(resolution: int) -> list[int]:
    """The side of each D block's output (`resnet_discriminator_blocks`: halvings, then two
    blocks at constant size)."""
    num_down = max(2, int(math.log2(resolution)) - 3)
    halved = [resolution >> (i + 1) for i in range(num_down)]
    return halved + [halved[-1]] * 2


def attention_resolutions(resolution: int) -> list[int]:
    """Where self-attention can go: the sides both G and D have after one of their blocks."""
    return sorted(
        set(generator_resolutions(resolution)) & set(discriminator_resolutions(resolution))
    )


def _attention_after(resolutions: list[int], attention_resolution: int) -> int | None:
    """The index of the first block whose output is `attention_resolution` (None: off)."""
    return resolutions.index(attention_resolution) if attention_resolution else None


class BigGANGenerator(GuardedWeights):
    family = "biggan"

    def __init__(
        self,
        latent_dim: int,
        width: int,
        resolution: int,
        channels: int,
        num_classes: int,
        attention_resolution: int = 0,
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
        self.attention_after = _attention_after(
            generator_resolutions(resolution), attention_resolution
        )
        if self.attention_after is not None:
            self.attention = SelfAttention(self.ch)
        self.out_norm = nn.BatchNorm2d(self.ch)
        self.to_image = spectral_norm(nn.Conv2d(self.ch, channels, 3, 1, 1))

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Hierarchical latent: chunk 0 feeds the stem, chunk i+1 conditions block i.
        chunks = z[:, : self.chunk * (len(self.blocks) + 1)].split(self.chunk, dim=1)
        shared = self.shared(labels)  # [B, 128]
        h = self.stem(chunks[0]).view(z.shape[0], self.ch, 4, 4)
        for index, (block, chunk) in enumerate(zip(self.blocks, chunks[1:], strict=True)):
            h = block(h, torch.cat([shared, chunk], dim=1))
            if index == self.attention_after:
                h = self.attention(h)
        return torch.tanh(self.to_image(F.relu(self.out_norm(h))))  # [B, C, H, W]

    def regularized_weights(self) -> list[torch.Tensor]:
        """Weights for the orthogonal regulariser: convs and linears (self-attention's too, as
        in BigGAN's code), not the shared embedding or BN."""
        attention = [] if self.attention_after is None else conv_weights(self.attention)
        return (
            conv_weights(self.blocks)
            + attention
            + conv_weights(self.stem)
            + conv_weights(self.to_image)
        )


class BigGANDiscriminator(GuardedWeights):
    family = "biggan"

    def __init__(
        self,
        width: int,
        resolution: int,
        channels: int,
        num_classes: int,
        attention_resolution: int = 0,
    ) -> None:
        super().__init__()
        ch = 4 * width
        self.blocks = resnet_discriminator_blocks(channels, ch, resolution)
        self.attention_after = _attention_after(
            discriminator_resolutions(resolution), attention_resolution
        )
        if self.attention_after is not None:
            self.attention = SelfAttention(ch)
        self.head = ProjectionHead(ch, num_classes)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = images
        for index, block in enumerate(self.blocks):
            h = block(h)
            if index == self.attention_after:
                h = self.attention(h)
        return self.head(h, labels)  # [B]


def validate(cfg: ModelConfig, resolution: int, channels: int) -> None:
    # num_classes=0 is allowed here: `gandist train` takes it from the shards before building.
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
    accepted = attention_resolutions(resolution)
    if cfg.attention_resolution and cfg.attention_resolution not in accepted:
        raise ConfigError(
            f"model.attention_resolution={cfg.attention_resolution} is not a feature-map size "
            f"that both BigGAN networks have at data.resolution={resolution}: choose one of "
            f"{accepted}, or 0 for no self-attention"
        )


@MODELS.register("biggan")
def build(cfg: ModelConfig, resolution: int, channels: int) -> tuple[nn.Module, nn.Module]:
    validate(cfg, resolution, channels)
    require_classes(cfg)
    attention = cfg.attention_resolution
    generator = BigGANGenerator(
        cfg.latent_dim, cfg.g_width, resolution, channels, cfg.num_classes, attention
    )
    discriminator = BigGANDiscriminator(
        cfg.d_width, resolution, channels, cfg.num_classes, attention
    )
    return generator, discriminator


build.validate = validate
build.conditional = True
