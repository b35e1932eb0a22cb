"""StyleGAN2's FIR resampling (gandist.models.filters) against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from gandist.models.filters import (
    conv2d_resample,
    downsample2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)

TAPS = np.array([1.0, 3.0, 3.0, 1.0])


def test_filter_is_the_normalised_outer_product_of_the_taps() -> None:
    expected = np.outer(TAPS, TAPS) / 64.0
    assert np.allclose(setup_filter().numpy(), expected)
    assert float(setup_filter().sum()) == pytest.approx(1.0)


@pytest.mark.parametrize(("up", "gain"), [(1, 1.0), (2, 4.0)])
def test_an_impulse_gives_the_filter_scaled_by_the_gain(up: int, gain: float) -> None:
    impulse = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    impulse[0, 0, 2, 2] = 1.0
    out = upfirdn2d(impulse, setup_filter().double(), up=up, padding=3, gain=gain)[0, 0]
    # Zero insertion puts the impulse at (2*up, 2*up); padding 3 shifts it to 2*up + 3, and
    # the 4-tap filter's response starts 3 samples before: the 4x4 block at (2*up, 2*up).
    block = out[2 * up : 2 * up + 4, 2 * up : 2 * up + 4].numpy()
    assert np.allclose(block, gain * np.outer(TAPS, TAPS) / 64.0)
    assert float(out.sum()) == pytest.approx(gain)  # nothing else anywhere


def _scipy_upfirdn2d(image: np.ndarray, up: int, down: int) -> np.ndarray:
    """scipy's 1-D upfirdn along both axes: the separable filter is the outer product."""
    kernel = TAPS / TAPS.sum()
    rows = np.stack([scipy.signal.upfirdn(kernel, row, up, down) for row in image])
    return np.stack([scipy.signal.upfirdn(kernel, col, up, down) for col in rows.T]).T


@pytest.mark.parametrize(("up", "down"), [(1, 1), (2, 1), (1, 2), (3, 1), (1, 3)])
def test_upfirdn2d_equals_scipy_upfirdn_on_both_axes(up: int, down: int) -> None:
    image = np.random.default_rng(0).standard_normal((7, 9))
    expected = _scipy_upfirdn2d(image, up, down)
    # scipy's full convolution: pad by taps - 1 on both sides. Zero insertion here also adds
    # up - 1 trailing zeros, so the output may run longer; the common part must agree.
    x = torch.from_numpy(image)[None, None]
    ours = upfirdn2d(x, setup_filter().double(), up=up, down=down, padding=3)[0, 0].numpy()
    rows, cols = expected.shape
    assert ours.shape[0] >= rows and ours.shape[1] >= cols
    assert np.allclose(ours[:rows, :cols], expected)
    assert np.allclose(ours[rows:], 0) and np.allclose(ours[:, cols:], 0)


def test_resampling_keeps_a_constant_away_from_the_zero_padded_border() -> None:
    constant = torch.full((2, 3, 16, 16), 0.7, dtype=torch.float64)
    f = setup_filter().double()
    up = upsample2d(constant, f)
    assert up.shape == (2, 3, 32, 32)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.tensor(0.7, dtype=torch.float64))
    down = downsample2d(constant, f)
    assert down.shape == (2, 3, 8, 8)
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.tensor(0.7, dtype=torch.float64))
    round_trip = downsample2d(up, f)
    assert round_trip.shape == constant.shape
    assert torch.allclose(round_trip[..., 2:-2, 2:-2], constant[..., 2:-2, 2:-2])


def test_downsampling_filters_out_the_frequency_that_decimation_would_alias() -> None:
    # A checkerboard is the highest frequency a grid holds: keeping every other pixel turns it
    # into a constant (an alias). The filter's response is zero there, so nothing is left.
    board = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1
    board = board[None, None].double()
    assert torch.equal(board[..., ::2, ::2], torch.full((1, 1, 8, 8), -1.0).double())
    filtered = downsample2d(board, setup_filter().double())
    assert filtered[..., 1:-1, 1:-1].abs().max() < 1e-12


@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("groups", [1, 2])
def test_fused_upsampling_conv_equals_filtered_upsampling_then_conv(
    kernel: int, groups: int
) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(6, 4 // groups, kernel, kernel, dtype=torch.float64)
    f = setup_filter().double()
    fused = conv2d_resample(x, weight, f, up=2, padding=kernel // 2, groups=groups)
    direct = F.conv2d(upsample2d(x, f), weight, padding=kernel // 2, groups=groups)
    assert fused.shape == direct.shape == (2, 6, 12, 12)
    # The fused op pads once, before filtering, so only the border may differ.
    inner = slice(2, -2)
    assert torch.allclose(fused[..., inner, inner], direct[..., inner, inner])


@pytest.mark.parametrize("kernel", [1, 3])
def test_strided_downsampling_conv_equals_conv_then_filtered_downsampling(kernel: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 12, 12, dtype=torch.float64)
    weight = torch.randn(5, 4, kernel, kernel, dtype=torch.float64)
    f = setup_filter().double()
    fused = conv2d_resample(x, weight, f, down=2, padding=kernel // 2)
    direct = downsample2d(F.conv2d(x, weight, padding=kernel // 2), f)
    assert fused.shape == direct.shape == (2, 5, 6, 6)
    assert torch.allclose(fused[..., 1:-1, 1:-1], direct[..., 1:-1, 1:-1])
