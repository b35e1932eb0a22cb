"""CycleGAN's networks (Zhu et al., 2017): the ResNet image translator and the 70x70 PatchGAN.

Both follow the authors' reference implementation: instance norm without affine parameters
(so convolutions keep their bias), reflect padding in the translator, weights drawn from
N(0, 0.02). The builder returns one translator and one discriminator; the `cyclegan` algorithm
builds two of each (A->B with the D that judges B, and B->A with the D that judges A).
"""

from __future__ import annotations

import torch
from torch import nn

from gandist.errors import ConfigError
from gandist.models.config import ModelConfig
from gandist.registry import MODELS

PATCH_RECEPTIVE_FIELD = 70
"""Input pixels one PatchGAN output sees along each side (the paper's 70x70 patches)."""


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResidualBlock(nn.Module):
    """x + (reflect pad, conv3x3, IN, ReLU, reflect pad, conv3x3, IN)(x); shape unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetTranslator(nn.Module):
    """Images [B, C, H, W] in [-1, 1] -> images of the other domain, same shape, in [-1, 1].

    c7s1-w, d2w, d4w, `num_blocks` x R4w, u2w, uw, c7s1-C with tanh: two stride-2 convolutions
    down, residual blocks at 1/4 of the side, two transposed convolutions back up. H and W
    must be multiples of 4.
    """

    def __init__(self, channels: int, width: int = 64, num_blocks: int = 9) -> None:
        super().__init__()
        self.num_blocks = num_blocks
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(channels, width, 7),
            _norm(width),
            nn.ReLU(inplace=True),
        ]
        for mult in (1, 2):
            layers += [
                nn.Conv2d(width * mult, width * mult * 2, 3, stride=2, padding=1),
                _norm(width * mult * 2),
                nn.ReLU(inplace=True),
            ]
        layers += [ResidualBlock(width * 4) for _ in range(num_blocks)]
        for mult in (4, 2):
            layers += [
                nn.ConvTranspose2d(
                    width * mult, width * mult // 2, 3, stride=2, padding=1, output_padding=1
                ),
                _norm(width * mult // 2),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class PatchDiscriminator(nn.Module):
    """The 70x70 PatchGAN: images [B, C, H, W] -> a map of logits [B, 1, H/8 - 2, W/8 - 2].

    C64 (no norm), C128, C256 with stride 2, C512 with stride 1, then a 1-channel convolution:
    each output judges one 70x70 patch of the input (PATCH_RECEPTIVE_FIELD), so the
    discriminator penalises structure at the scale of patches and runs on any image size.
    """

    def __init__(self, channels: int, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(channels, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for fan_in, fan_out, stride in ((1, 2, 2), (2, 4, 2), (4, 8, 1)):
            layers += [
                nn.Conv2d(width * fan_in, width * fan_out, 4, stride=stride, padding=1),
                _norm(width * fan_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(width * 8, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)


MIN_RESOLUTION = 24
"""Smallest side the PatchGAN still maps to at least one output (24 -> 3 -> 2 -> 1)."""


def validate(cfg: ModelConfig, resolution: int, channels: int) -> None:
    if resolution < MIN_RESOLUTION or resolution % 4:
        raise ConfigError(
            f"model.name=cyclegan needs data.resolution to be a multiple of 4 and >= "
            f"{MIN_RESOLUTION} (the translator halves the side twice, the PatchGAN thrice), "
            f"got {resolution}"
        )


@MODELS.register("cyclegan")
def build(cfg: ModelConfig, resolution: int, channels: int) -> tuple[nn.Module, nn.Module]:
    """One translator (images -> images) and one PatchGAN; not a noise-to-image generator, so
    only `train.algorithm=cyclegan` trains this family."""
    validate(cfg, resolution, channels)
    translator = ResnetTranslator(channels, cfg.g_width, cfg.res_blocks)
    return translator, PatchDiscriminator(channels, cfg.d_width)


build.validate = validate
build.translator = True


class TranslatorPair(nn.Module):
    """Both translators of a CycleGAN as one module: `ab` (A -> B) and `ba` (B -> A).

    What a CycleGAN checkpoint exports as its generator (`generator.pt`: keys `ab.*`, `ba.*`),
    what `gandist translate` loads, and what evaluation scores in both directions.
    """

    translator = True

    def __init__(self, ab: nn.Module, ba: nn.Module) -> None:
        super().__init__()
        self.ab, self.ba = ab, ba

    def forward(self, images: torch.Tensor, direction: str = "ab") -> torch.Tensor:
        if direction not in ("ab", "ba"):
            raise ValueError(f"direction must be ab or ba, got {direction!r}")
        return self.ab(images) if direction == "ab" else self.ba(images)


def build_pair(cfg: ModelConfig, resolution: int, channels: int) -> TranslatorPair:
    """An untrained TranslatorPair of this config's shape (to load `generator.pt` into)."""
    validate(cfg, resolution, channels)
    return TranslatorPair(
        ResnetTranslator(channels, cfg.g_width, cfg.res_blocks),
        ResnetTranslator(channels, cfg.g_width, cfg.res_blocks),
    )
