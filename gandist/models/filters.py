"""FIR-filtered resampling of feature maps (StyleGAN2's upfirdn2d), in plain PyTorch ops.

Nearest, bilinear or average-pool resampling aliases: high frequencies fold back into the
feature maps, and a generator learns to lean on them (Karras et al., 2020 and 2021). StyleGAN2
low-pass filters every up- and down-sampling with the normalised outer product of [1, 3, 3, 1].
The conventions (zero insertion after each pixel, padding relative to the up-sampled image,
gain `up**2` so that zero insertion keeps a constant's magnitude) follow `upfirdn2d.py` and
`conv2d_resample.py` of NVlabs/stylegan2-ada-pytorch, written here without custom CUDA ops.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

STYLEGAN2_TAPS = (1.0, 3.0, 3.0, 1.0)


def setup_filter(taps: Sequence[float] = STYLEGAN2_TAPS) -> torch.Tensor:
    """The 2-D filter [T, T]: the outer product of `taps`, normalised to sum 1 (keeps DC)."""
    kernel = torch.as_tensor(taps, dtype=torch.float32)
    if kernel.ndim != 1 or kernel.numel() < 1:
        raise ValueError(f"taps must be a non-empty 1-D sequence, got shape {tuple(kernel.shape)}")
    kernel = torch.outer(kernel, kernel)
    return kernel / kernel.sum()


def _padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """(x_before, x_after, y_before, y_after) from one int, (x, y) or all four."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    x0, x1, y0, y1 = padding
    return x0, x1, y0, y1


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = 1.0,
) -> torch.Tensor:
    """Up-sample by zero insertion, pad, convolve with the FIR filter `f`, keep every `down`-th.

    x [B, C, H, W]; f [fh, fw] (from `setup_filter`); negative padding crops. The output is
    [B, C, (H*up + y0 + y1 - fh) // down + 1, (W*up + x0 + x1 - fw) // down + 1]. `gain`
    scales the result (use up**2 after zero insertion to keep a constant's level).
    """
    batch, channels, height, width = x.shape
    x0, x1, y0, y1 = _padding(padding)
    if up > 1:  # each pixel followed by up-1 zeros, along both axes
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]
    # conv2d correlates: flip the filter for a true convolution (the [1,3,3,1] one is symmetric).
    weight = (f * gain).flip([0, 1]).to(x.dtype)
    weight = weight[None, None].expand(channels, 1, *f.shape)
    # A strided depthwise conv is the full convolution followed by [::down, ::down].
    return F.conv2d(x, weight, stride=down, groups=channels)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H*up, W*up], low-pass filtered, a constant kept constant."""
    fw = f.shape[-1]
    pad = ((fw + up - 1) // 2, (fw - up) // 2)
    return upfirdn2d(x, f, up=up, padding=(pad[0], pad[1], pad[0], pad[1]), gain=up**2)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H/down, W/down], low-pass filtered before decimation."""
    fw = f.shape[-1]
    pad = ((fw - down + 1) // 2, (fw - down) // 2)
    return upfirdn2d(x, f, down=down, padding=(pad[0], pad[1], pad[0], pad[1]))


def conv2d_resample(
    x: torch.Tensor,
    weight: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
) -> torch.Tensor:
    """`F.conv2d(x, weight, padding=padding, groups=groups)` on the image up-sampled by `up`
    (zero insertion + `f`) or before decimation by `down` (`f` + keep every `down`-th pixel).

    Up: a transposed strided convolution followed by the filter, which equals zero insertion,
    filter, then the convolution, at a quarter of the cost. Down: filter, then a strided
    convolution (a 1x1 kernel filters and decimates first). Padding happens once, up front,
    as in the official `conv2d_resample`, so the output is [B, out, H*up/down, W*up/down].
    """
    assert not (up > 1 and down > 1), "up- or down-sampling, not both"
    out_ch, in_per_group, kh, kw = weight.shape
    assert kh == kw, "square kernels only"
    if up == 1 and down == 1:
        return F.conv2d(x, weight, padding=padding, groups=groups)
    assert f is not None, "resampling needs a filter"
    fw = f.shape[-1]
    if down > 1:
        p0 = padding + (fw - down + 1) // 2
        p1 = padding + (fw - down) // 2
        if kw == 1 and kh == 1:
            return F.conv2d(
                upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1)), weight, groups=groups
            )
        x = upfirdn2d(x, f, padding=(p0, p1, p0, p1))
        return F.conv2d(x, weight, stride=down, groups=groups)
    p0 = padding + (fw + up - 1) // 2
    p1 = padding + (fw - up) // 2
    if kw == 1 and kh == 1:  # a 1x1 conv commutes with resampling: convolve the small image
        x = F.conv2d(x, weight, groups=groups)
        return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up**2)
    # conv_transpose2d scatters each input pixel through the kernel: zero insertion followed
    # by a true convolution. Flipping the kernel makes it the correlation F.conv2d computes.
    # Its weight is [in, out / groups, k, k].
    weight = weight.reshape(groups, out_ch // groups, in_per_group, kh, kw)
    weight = weight.transpose(1, 2).reshape(groups * in_per_group, out_ch // groups, kh, kw)
    x = F.conv_transpose2d(x, weight.flip([2, 3]), stride=up, groups=groups)
    p0 -= kw - 1
    p1 -= kw - up
    return upfirdn2d(x, f, padding=(p0, p1, p0, p1), gain=up**2)
