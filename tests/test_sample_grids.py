"""Sample grids: what the saved PNG shows, pixel by pixel, for colour and grayscale samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gandist.tracking import image_grid


def _expected_tile(samples: torch.Tensor) -> np.ndarray:
    """[-1, 1] -> uint8 by hand: -1 is black, 1 white, (x + 1) / 2 * 255 rounded half up."""
    return np.floor((samples.clamp(-1, 1).numpy() + 1) / 2 * 255 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_png_shows_each_sample_in_place_on_black_padding(
    tmp_path: Path, channels: int
) -> None:
    torch.manual_seed(0)
    samples = torch.rand(4, channels, 4, 4) * 2.4 - 1.2  # a little outside [-1, 1]: clipped
    samples[0, :, 0, 0], samples[0, :, 0, 1], samples[0, :, 0, 2] = -1.0, 0.0, 1.0
    grid = image_grid(samples, tmp_path / "grid.png")
    image = Image.open(tmp_path / "grid.png")
    # Grayscale samples are saved as RGB with three equal channels; 2 x 2 tiles, 2 px padding.
    assert image.mode == "RGB" and image.size == (2 + 2 * 6, 2 + 2 * 6)
    pixels = np.asarray(image)  # [H, W, 3]
    assert grid.shape == (3, 14, 14)
    np.testing.assert_allclose(grid.permute(1, 2, 0).numpy() * 255, pixels, atol=0.5)
    tiles = np.zeros((14, 14, 3), dtype=bool)
    for index in range(4):
        top, left = 2 + (index // 2) * 6, 2 + (index % 2) * 6
        tile = pixels[top : top + 4, left : left + 4]  # [4, 4, 3]
        expected = _expected_tile(samples[index]).transpose(1, 2, 0)  # [4, 4, C]
        np.testing.assert_array_equal(tile, np.broadcast_to(expected, tile.shape))
        tiles[top : top + 4, left : left + 4] = True
    assert tuple(pixels[2, 2]) == (0, 0, 0)
    assert tuple(pixels[2, 3]) == (128, 128, 128) and tuple(pixels[2, 4]) == (255, 255, 255)
    assert (pixels[~tiles] == 0).all()  # the padding is black, and only the padding
