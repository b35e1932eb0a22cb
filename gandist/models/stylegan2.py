"""StyleGAN2-style (Karras et al., 2020) in plain PyTorch: no custom CUDA ops.

G: a mapping network z -> w, a learned 4x4 constant, per-resolution modulated/demodulated 3x3
convolutions (fused as grouped convolutions) with per-pixel noise inputs, and skip
connections through modulated 1x1 toRGB layers. D: a ResNet with minibatch standard deviation.
All layers use the equalised learning rate (weights scaled at run time). Style mixing happens
in `G.forward` while training; `G.mapping` and `G.synthesis` are exposed for path-length
regularisation, whose running target lives in the `pl_mean` buffer.

Resampling is FIR-filtered as in the paper (gandist.models.filters): G's up-sampling 3x3
convolutions and its toRGB skip sum, and D's down-sampling convolutions and residual skips,
low-pass filter with [1, 3, 3, 1]. Each resampling layer holds that filter as its
`resample_filter` buffer, as the official networks do. The truncation trick is
`gandist.models.truncation`; the lazy-regularisation correction of Adam's learning rate and
betas is `AdversarialGAN.optimizers()`. Against the official code: no fp16 clamping and no
custom CUDA ops, so it stays plain PyTorch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gandist.errors import ConfigError
from gandist.models.config import ModelConfig
from gandist.models.filters import conv2d_resample, setup_filter, upsample2d
from gandist.models.layers import GuardedWeights, minibatch_stddev
from gandist.registry import MODELS

SQRT2 = math.sqrt(2.0)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    # Gain sqrt(2) keeps activations at unit variance through the leaky ReLU (He init).
    return F.leaky_relu(x, 0.2) * SQRT2


class EqualLinear(nn.Module):
    """Linear layer with N(0, 1) weights scaled by lr_mul / sqrt(fan_in) at every call."""

    def __init__(
        self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)


class EqualConv2d(nn.Module):
    """Convolution with the equalised learning rate; `down=2` low-pass filters, then strides."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, bias: bool = True, down: int = 1
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.down = down
        if down > 1:
            self.register_buffer("resample_filter", setup_filter())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (self.weight * self.weight_gain).to(x.dtype)
        if self.down == 1:
            return F.conv2d(x, weight, self.bias, padding=self.weight.shape[-1] // 2)
        x = conv2d_resample(
            x, weight, self.resample_filter, down=self.down, padding=self.weight.shape[-1] // 2
        )
        return x if self.bias is None else x + self.bias[None, :, None, None].to(x.dtype)


class MappingNetwork(nn.Module):
    def __init__(self, latent_dim: int, w_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [latent_dim] + [w_dim] * num_layers
        # lr_mul 0.01: the mapping network learns 100x slower, as in StyleGAN.
        self.layers = nn.ModuleList(
            [EqualLinear(a, b, lr_mul=0.01) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)  # normalise 2nd moment
        for layer in self.layers:
            x = _lrelu(layer(x))
        return x  # [B, w_dim]


class ModulatedConv2d(nn.Module):
    """Convolution whose weights are scaled per sample by a style from w, then demodulated.

    Demodulation divides each output filter by its norm after modulation, which replaces
    StyleGAN's AdaIN and removes its droplet artefacts. The per-sample weights run as one
    grouped convolution over the batch. `up=2` convolves the 2x FIR-up-sampled input (fused
    into a transposed convolution, as the official code does).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        w_dim: int,
        demodulate: bool = True,
        up: int = 1,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)  # styles start at 1
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate = demodulate
        self.up = up
        if up > 1:
            self.register_buffer("resample_filter", setup_filter())

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch, in_ch, height, width = x.shape
        styles = self.affine(w)  # [B, in]
        weight = self.weight[None] * self.weight_gain * styles[:, None, :, None, None]
        if self.demodulate:  # [B, out, in, k, k] with unit-norm output filters
            weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        out_ch, kernel = weight.shape[1], weight.shape[-1]
        x = x.reshape(1, batch * in_ch, height, width)
        weight = weight.reshape(batch * out_ch, in_ch, kernel, kernel).to(x.dtype)
        out = conv2d_resample(
            x,
            weight,
            getattr(self, "resample_filter", None),
            up=self.up,
            padding=kernel // 2,
            groups=batch,
        )
        return out.reshape(batch, out_ch, *out.shape[2:])


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (up-sampling 2x when `up`) + scaled per-pixel noise + bias + lReLU."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: bool) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, up=2 if up else 1)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        # Fixed noise used in eval mode, so a grid from fixed latents is deterministic.
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, w)
        if self.training:
            noise = torch.randn(
                x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype
            )
        else:
            noise = self.noise_const.to(x.dtype)
        x = x + noise * self.noise_strength.to(x.dtype)
        return _lrelu(x + self.bias[None, :, None, None].to(x.dtype))


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None].to(x.dtype)


def _channels(res: int, resolution: int, width: int) -> int:
    # `width` channels at the output resolution, doubling per halving, capped at 4 x width.
    return min(4 * width, width * resolution // res)


class StyleGAN2Generator(GuardedWeights):
    family = "stylegan2"

    def __init__(
        self,
        latent_dim: int,
        width: int,
        resolution: int,
        channels: int,
        mapping_layers: int,
        style_mixing_prob: float,
    ) -> None:
        super().__init__()
        self.latent_dim = self.w_dim = latent_dim
        self.style_mixing_prob = style_mixing_prob
        resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]  # 4, 8, ..., res
        self.mapping_net = MappingNetwork(latent_dim, self.w_dim, mapping_layers)
        first = _channels(4, resolution, width)
        self.const = nn.Parameter(torch.randn(first, 4, 4))
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = first
        for res in resolutions:
            out_ch = _channels(res, resolution, width)
            if res > 4:
                self.convs.append(SynthesisLayer(in_ch, out_ch, self.w_dim, res, up=True))
            self.convs.append(SynthesisLayer(out_ch, out_ch, self.w_dim, res, up=False))
            self.to_rgbs.append(ToRGB(out_ch, channels, self.w_dim))
            in_ch = out_ch
        # One w per conv layer plus one for the last toRGB; toRGB i shares w with the next conv.
        self.num_ws = len(self.convs) + 1
        self.register_buffer("pl_mean", torch.zeros([]))
        self.register_buffer("resample_filter", setup_filter())  # up-samples the RGB skip sum

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, latent_dim] -> ws [B, num_ws, w_dim] (the same w broadcast to every layer)."""
        return self.mapping_net(z)[:, None, :].expand(-1, self.num_ws, -1)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        x = self.const[None].expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        image = None
        layer = 0
        for rgb_index, to_rgb in enumerate(self.to_rgbs):
            for _ in range(1 if rgb_index == 0 else 2):
                x = self.convs[layer](x, ws[:, layer])
                layer += 1
            rgb = to_rgb(x, ws[:, layer])
            if image is not None:
                image = upsample2d(image, self.resample_filter)
            image = rgb if image is None else image + rgb
        return image  # [B, C, H, W], unbounded like the official G (data lies in [-1, 1])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        ws = self.mapping(z)
        if self.training and self.style_mixing_prob > 0:
            ws = self._mix_styles(z, ws)
        return self.synthesis(ws)

    def _mix_styles(self, z: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        # With probability p the layers from a random cutoff on take the w of a second latent,
        # so G cannot rely on adjacent styles being correlated.
        if torch.rand([]).item() >= self.style_mixing_prob:
            return ws
        cutoff = int(torch.randint(1, self.num_ws, []).item())
        other = self.mapping(torch.randn_like(z))
        return torch.cat([ws[:, :cutoff], other[:, cutoff:]], dim=1)


class DiscriminatorBlock(nn.Module):
    """ResNet block halving the resolution: conv3, FIR-filtered strided conv3, filtered 1x1 skip."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = EqualConv2d(in_ch, in_ch, 3)
        self.conv2 = EqualConv2d(in_ch, out_ch, 3, down=2)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(x)
        h = _lrelu(self.conv2(_lrelu(self.conv1(x))))
        return (h + skip) / SQRT2  # residual sum at unit variance


class StyleGAN2Discriminator(GuardedWeights):
    family = "stylegan2"

    def __init__(self, width: int, resolution: int, channels: int) -> None:
        super().__init__()
        resolutions = [2**i for i in range(int(math.log2(resolution)), 2, -1)]  # res, ..., 8
        self.from_rgb = EqualConv2d(channels, _channels(resolution, resolution, width), 1)
        self.blocks = nn.Sequential(
            *[
                DiscriminatorBlock(
                    _channels(res, resolution, width), _channels(res // 2, resolution, width)
                )
                for res in resolutions
            ]
        )
        ch = _channels(4, resolution, width)
        self.final_conv = EqualConv2d(ch + 1, ch, 3)
        self.fc = EqualLinear(ch * 16, ch)
        self.out = EqualLinear(ch, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.blocks(_lrelu(self.from_rgb(images)))  # [B, ch, 4, 4]
        x = _lrelu(self.final_conv(minibatch_stddev(x)))
        return self.out(_lrelu(self.fc(x.flatten(1)))).squeeze(1)  # [B]


def validate(cfg: ModelConfig, resolution: int, channels: int) -> None:
    if resolution < 8 or resolution & (resolution - 1):
        raise ConfigError(
            f"model.name=stylegan2 needs data.resolution to be a power of two >= 8, got {resolution}"
        )


@MODELS.register("stylegan2")
def build(cfg: ModelConfig, resolution: int, channels: int) -> tuple[nn.Module, nn.Module]:
    validate(cfg, resolution, channels)
    generator = StyleGAN2Generator(
        cfg.latent_dim, cfg.g_width, resolution, channels, cfg.mapping_layers, cfg.style_mixing_prob
    )
    return generator, StyleGAN2Discriminator(cfg.d_width, resolution, channels)


build.validate = validate
