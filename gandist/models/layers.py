"""Layers shared by the GAN families: conditional BN, spectral norm, ResNet blocks, projection
heads, self-attention, and the one-line refusal of weights from another architecture."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gandist.errors import ConfigError

# Keys named in the refusal of foreign weights; the rest are counted.
_KEYS_SHOWN = 3


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append the feature standard deviation across groups of samples as one extra channel."""
    batch, ch, height, width = x.shape
    group = math.gcd(group_size, batch)
    y = x.float().reshape(group, -1, ch, height, width)
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()  # [B/G, C, H, W]
    y = y.mean(dim=(1, 2, 3))[:, None, None, None]  # [B/G, 1, 1, 1]
    y = y.repeat(group, 1, height, width).to(x.dtype)
    return torch.cat([x, y], dim=1)


class MinibatchStddev(nn.Module):
    """minibatch_stddev as a layer (StyleGAN's remedy for collapse, Karras et al., 2018, 3):
    D sees how much the samples in its group differ, so a G that draws one image is caught."""

    def __init__(self, group_size: int) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return minibatch_stddev(x, self.group_size)  # [B, C + 1, H, W]


def maybe_sn(module: nn.Module, enabled: bool) -> nn.Module:
    """`module` with spectral normalisation of its weight (Miyato et al., 2018) when enabled."""
    return spectral_norm(module) if enabled else module


def conv_weights(module: nn.Module) -> list[torch.Tensor]:
    """The (unnormalised) weight of every conv and linear layer, for weight regularisers."""
    weights = []
    for layer in module.modules():
        if isinstance(
            layer, (nn.Conv1d, nn.ConvTranspose1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
        ):
            weights.append(
                layer.parametrizations.weight.original
                if hasattr(layer, "parametrizations")
                else layer.weight
            )
    return weights


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose gain and bias are predicted from a conditioning vector [B, cond_dim].

    With a one-hot class vector this is the class-conditional BN of de Vries et al. (2017);
    with a class embedding concatenated to a latent chunk it is BigGAN's. The gain is 1 + f(c)
    with f initialised to zero, so training starts from plain BN.
    """

    def __init__(self, num_features: int, cond_dim: int, spectral: bool = False) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_features, affine=False)
        self.gain = maybe_sn(nn.Linear(cond_dim, num_features, bias=False), spectral)
        self.bias = maybe_sn(nn.Linear(cond_dim, num_features, bias=False), spectral)
        if not spectral:
            nn.init.zeros_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gain = 1.0 + self.gain(cond)[:, :, None, None]
        bias = self.bias(cond)[:, :, None, None]
        return self.norm(x) * gain + bias


class GBlock(nn.Module):
    """ResNet up-block of SNGAN/BigGAN generators: BN-ReLU-up-conv3-BN-ReLU-conv3 + up-conv1 skip.

    With `cond_dim > 0` both BNs are conditional and `forward` takes the conditioning vector.
    """

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int = 0, spectral: bool = False) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        if cond_dim:
            self.norm1 = ConditionalBatchNorm2d(in_ch, cond_dim, spectral)
            self.norm2 = ConditionalBatchNorm2d(out_ch, cond_dim, spectral)
        else:
            self.norm1, self.norm2 = nn.BatchNorm2d(in_ch), nn.BatchNorm2d(out_ch)
        self.conv1 = maybe_sn(nn.Conv2d(in_ch, out_ch, 3, 1, 1), spectral)
        self.conv2 = maybe_sn(nn.Conv2d(out_ch, out_ch, 3, 1, 1), spectral)
        self.skip = maybe_sn(nn.Conv2d(in_ch, out_ch, 1), spectral)

    def _norm(self, norm: nn.Module, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return norm(x, cond) if self.cond_dim else norm(x)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self._norm(self.norm1, x, cond))
        h = self.conv1(F.interpolate(h, scale_factor=2, mode="nearest"))  # [B, out, 2H, 2W]
        h = self.conv2(F.relu(self._norm(self.norm2, h, cond)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """ResNet down-block of SNGAN/BigGAN discriminators, spectrally normalised.

    `first=True` is the "optimised" input block: no ReLU before the first conv (the input is
    an image) and the skip pools before its 1x1 conv.
    """

    def __init__(
        self, in_ch: int, out_ch: int, downsample: bool = True, first: bool = False
    ) -> None:
        super().__init__()
        self.first, self.downsample = first, downsample
        self.conv1 = spectral_norm(nn.Conv2d(in_ch, out_ch, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(out_ch, out_ch, 3, 1, 1))
        self.skip = (
            spectral_norm(nn.Conv2d(in_ch, out_ch, 1)) if in_ch != out_ch or downsample else None
        )

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self._pool(self.conv2(F.relu(self.conv1(h))))
        if self.skip is None:
            return h + x
        skip = self.skip(self._pool(x)) if self.first else self._pool(self.skip(x))
        return h + skip


def resnet_discriminator_blocks(channels: int, ch: int, resolution: int) -> nn.Sequential:
    """The SNGAN / BigGAN discriminator trunk: [B, channels, R, R] -> [B, ch, R', R'].

    Down-sampling blocks to 8x8 (at least two), then two blocks at constant size.
    """
    num_down = max(2, int(math.log2(resolution)) - 3)
    blocks = [DBlock(channels, ch, first=True)]
    blocks += [DBlock(ch, ch) for _ in range(num_down - 1)]
    blocks += [DBlock(ch, ch, downsample=False) for _ in range(2)]
    return nn.Sequential(*blocks)


class ProjectionHead(nn.Module):
    """The output of a projection discriminator (Miyato & Koyama, 2018).

    logits = psi(h) + <embed(y), h> over sum-pooled features h: the class enters as an inner
    product, not by concatenation, which is what makes the conditional D work at scale.
    With num_classes=0 it is an unconditional linear head.
    """

    def __init__(self, features: int, num_classes: int = 0) -> None:
        super().__init__()
        self.linear = spectral_norm(nn.Linear(features, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, features)) if num_classes else None

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(h).sum(dim=(2, 3))  # [B, features]
        logits = self.linear(h).squeeze(1)  # [B]
        if self.embed is not None:
            assert labels is not None, "a conditional discriminator needs labels"
            logits = logits + (self.embed(labels) * h).sum(1)
        return logits


class SelfAttention(nn.Module):
    """SAGAN's non-local block (Zhang et al., 2019) as BigGAN uses it.

    Every position attends to every position of a 2x max-pooled map: theta (C/8 channels) at
    full resolution queries phi (C/8) and reads g (C/2), both pooled, which quarters the cost
    of the [HW, HW/4] attention matrix; o maps C/2 back to C. All four are spectrally
    normalised 1x1 convolutions without bias. The output is x + gamma * o(...), with the
    learned gamma starting at 0: the block begins as the identity and lets the network mix in
    non-local evidence as it learns to use it.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.key_ch, self.value_ch = max(1, channels // 8), max(1, channels // 2)
        self.theta = spectral_norm(nn.Conv2d(channels, self.key_ch, 1, bias=False))
        self.phi = spectral_norm(nn.Conv2d(channels, self.key_ch, 1, bias=False))
        self.g = spectral_norm(nn.Conv2d(channels, self.value_ch, 1, bias=False))
        self.o = spectral_norm(nn.Conv2d(self.value_ch, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        theta = self.theta(x).flatten(2)  # [B, C/8, HW]
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)  # [B, C/8, HW/4]
        g = F.max_pool2d(self.g(x), 2).flatten(2)  # [B, C/2, HW/4]
        attention = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # [B, HW, HW/4]
        read = (g @ attention.transpose(1, 2)).view(batch, self.value_ch, height, width)
        return x + self.gamma.to(x.dtype) * self.o(read)


def _shown(keys: set[str]) -> str:
    """Up to a few tensor names, spectral norm's internals read as the weight they belong to."""
    names = sorted({re.sub(r"\.parametrizations\.(\w+)\..*$", r".\1", k) for k in keys})
    more = f" and {len(names) - _KEYS_SHOWN} more" if len(names) > _KEYS_SHOWN else ""
    return ", ".join(names[:_KEYS_SHOWN]) + more


class GuardedWeights(nn.Module):
    """A network whose strict `load_state_dict` refuses, in one ConfigError line, weights whose
    tensor names differ from its own (torch raises a RuntimeError of many lines).

    Weights written by an older gandist (StyleGAN2 before FIR resampling) or with another
    architecture setting (model.attention_resolution) meet it whether a resume, the EMA,
    `gandist sample` or `gandist eval` loads them: each loads into the unwrapped network.
    """

    family = ""  # model.name, for the message

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        if strict:
            given, own = set(state_dict), set(self.state_dict())
            parts = []
            if own - given:
                parts.append(
                    f"lack {len(own - given)} tensors this model has ({_shown(own - given)})"
                )
            if given - own:
                parts.append(
                    f"hold {len(given - own)} tensors it does not have ({_shown(given - own)})"
                )
            if parts:
                raise ConfigError(
                    f"cannot load these model.name={self.family} {type(self).__name__} weights: "
                    f"they {' and '.join(parts)}. They were written by an older gandist or with "
                    "another model config (compare the run's config.yaml); train a new run, or "
                    "load them with the gandist version and model settings that wrote them"
                )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
