"""WaveGAN (Donahue, McAuley and Puckette, 2019): raw audio from 1-D transposed convolutions.

G maps z [B, latent_dim] through a dense layer to 16 frames of 16d channels (32d for 65536
samples), then transposed convolutions of kernel 25 and stride 4 each quadruple the length:
16 -> 64 -> 256 -> 1024 -> 4096 -> 16384 (-> 65536), ending in one channel through tanh. D
mirrors it with strided convolutions and LeakyReLU(0.2), and shuffles the phase of each layer's
activations (but the last) by a random -n..n samples, so it cannot tell real from fake by the
periodic artefacts of transposed convolutions. No batch norm anywhere: the paper trains with
WGAN-GP, whose per-sample penalty batch statistics would break.

The conditional variant adds a learned class embedding to G's input and a projection term
(Miyato and Koyama, 2018) to D's output: logits = psi(h) + <embed(y), h>.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gandist.errors import ConfigError
from gandist.models.config import ModelConfig
from gandist.registry import MODELS

KERNEL, STRIDE = 25, 4
PADDING = 11  # (kernel - stride) // 2 + 1 with output_padding 1: the length is exactly x4 (or /4)
START_FRAMES = 16
"""Frames of G's first feature map (and of D's last), as in the paper."""
LENGTHS = {4096: 4, 16384: 5, 65536: 6}
"""Supported clip lengths and their number of stride-4 layers (16 x 4^layers samples)."""


def num_layers(length: int) -> int:
    if length not in LENGTHS:
        raise ConfigError(
            f"model.audio_length must be one of {sorted(LENGTHS)} for WaveGAN "
            f"(16 x 4^layers samples), got {length}"
        )
    return LENGTHS[length]


class PhaseShuffle(nn.Module):
    """Shift each example's activations [B, C, L] by a random integer in [-n, n] along time.

    The samples shifted in at the edge are the reflection of the signal there (the paper's
    reflect padding), so no zeros are introduced. Only in training mode; identity otherwise.
    """

    def __init__(self, shift: int) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor, shifts: torch.Tensor | None = None) -> torch.Tensor:
        if self.shift == 0 or not (self.training or shifts is not None):
            return x
        batch, _, length = x.shape
        n = self.shift
        if shifts is None:
            shifts = torch.randint(-n, n + 1, (batch,), device=x.device)
        # padded[:, :, j] = x[:, :, j - n] (reflected outside 0..L-1); an output shifted right
        # by s reads padded from n - s: out[:, :, t] = x[:, :, t - s].
        padded = F.pad(x, (n, n), mode="reflect")
        windows = padded.unfold(2, length, 1)  # [B, C, 2n + 1, L], a view
        return windows[torch.arange(batch, device=x.device), :, n - shifts]  # [B, C, L]


def init_weights(network: nn.Module, output: nn.Module) -> None:
    """He-normal weights counted over the taps that really meet at one output, and zero biases.

    torch's defaults shrink the signal about 3.5x per transposed convolution here (their fan-in
    ignores the stride: only kernel / 4 taps reach each output sample) while every layer adds
    its bias, so an untrained G drew the same bias-made buzz whatever z (spread across latents
    5% of the loudness) and training started from there. With these, z decides the output from
    step 0 (the paper's TensorFlow code also starts biases at zero). The `output` layer gets
    gain 1 rather than ReLU's 2, and a tenth of it in G, so clips start quiet instead of
    clipping in tanh.
    """
    for module in network.modules():
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
            if isinstance(module, nn.Linear):
                fan_in = module.in_features
            else:
                fan_in = module.in_channels * module.kernel_size[0]
                if isinstance(module, nn.ConvTranspose1d):
                    fan_in //= module.stride[0]
            gain = 1.0 if module is output else 2.0
            std = (gain / fan_in) ** 0.5
            if module is output and isinstance(module, nn.ConvTranspose1d):
                std *= OUTPUT_SCALE
            nn.init.normal_(module.weight, 0.0, std)
            nn.init.zeros_(module.bias)


OUTPUT_SCALE = 0.1


class WaveGANGenerator(nn.Module):
    """G(z) or G(z, labels) -> clips [B, 1, L] in [-1, 1]."""

    def __init__(self, latent_dim: int, width: int, length: int, num_classes: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.num_classes, self.length = latent_dim, num_classes, length
        layers = num_layers(length)
        widths = [width * 2 ** (layers - 1 - i) for i in range(layers)]  # [16d, 8d, ..., d]
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        self.dense = nn.Linear(latent_dim * (2 if num_classes else 1), START_FRAMES * widths[0])
        convs = []
        for fan_in, fan_out in zip(widths, [*widths[1:], 1], strict=True):
            convs.append(
                nn.ConvTranspose1d(fan_in, fan_out, KERNEL, STRIDE, PADDING, output_padding=1)
            )
        self.convs = nn.ModuleList(convs)
        init_weights(self, output=self.convs[-1])

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            assert labels is not None, "a conditional WaveGAN generator needs labels"
            z = torch.cat([z, self.embed(labels)], dim=1)
        h = F.relu(self.dense(z).view(z.shape[0], -1, START_FRAMES))  # [B, 16d, 16]
        for conv in self.convs[:-1]:
            h = F.relu(conv(h))  # 4x longer, half the channels
        return torch.tanh(self.convs[-1](h))  # [B, 1, L]


class WaveGANDiscriminator(nn.Module):
    """D(clips) or D(clips, labels) -> logits [B]; phase shuffle after every conv but the last."""

    def __init__(self, width: int, length: int, shuffle: int, num_classes: int = 0) -> None:
        super().__init__()
        self.length = length
        layers = num_layers(length)
        widths = [width * 2**i for i in range(layers)]  # [d, 2d, ..., 16d]
        self.convs = nn.ModuleList(
            nn.Conv1d(fan_in, fan_out, KERNEL, STRIDE, PADDING)
            for fan_in, fan_out in zip([1, *widths[:-1]], widths, strict=True)
        )
        self.shuffle = PhaseShuffle(shuffle)
        features = START_FRAMES * widths[-1]
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None
        init_weights(self, output=self.linear)

    def forward(self, clips: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if clips.shape[1:] != (1, self.length):
            raise ValueError(
                f"WaveGAN's discriminator takes clips [B, 1, {self.length}], got "
                f"{list(clips.shape)}: set data.length=model.audio_length"
            )
        h = clips
        for i, conv in enumerate(self.convs):
            h = F.leaky_relu(conv(h), 0.2)
            if i < len(self.convs) - 1:
                h = self.shuffle(h)
        h = h.flatten(1)  # [B, 16 * 16d]
        logits = self.linear(h).squeeze(1)  # [B]
        if self.embed is not None:
            assert labels is not None, "a conditional WaveGAN discriminator needs labels"
            logits = logits + (self.embed(labels) * h).sum(1)
        return logits


def validate(cfg: ModelConfig, resolution: int, channels: int) -> None:
    num_layers(cfg.audio_length)


@MODELS.register("wavegan")
def build(cfg: ModelConfig, resolution: int, channels: int) -> tuple[nn.Module, nn.Module]:
    """G and D for clips of model.audio_length samples (resolution and channels are unused)."""
    validate(cfg, resolution, channels)
    generator = WaveGANGenerator(cfg.latent_dim, cfg.g_width, cfg.audio_length)
    discriminator = WaveGANDiscriminator(cfg.d_width, cfg.audio_length, cfg.phase_shuffle)
    return generator, discriminator


@MODELS.register("conditional-wavegan")
def build_conditional(
    cfg: ModelConfig, resolution: int, channels: int
) -> tuple[nn.Module, nn.Module]:
    """WaveGAN with a class embedding in G and a projection discriminator."""
    from gandist.models.conditional import require_classes

    validate(cfg, resolution, channels)
    require_classes(cfg)
    generator = WaveGANGenerator(cfg.latent_dim, cfg.g_width, cfg.audio_length, cfg.num_classes)
    discriminator = WaveGANDiscriminator(
        cfg.d_width, cfg.audio_length, cfg.phase_shuffle, cfg.num_classes
    )
    return generator, discriminator


for _builder in (build, build_conditional):
    _builder.validate = validate
    _builder.kind = "audio"
build_conditional.conditional = True
