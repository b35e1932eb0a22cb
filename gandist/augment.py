"""Differentiable augmentation (DiffAugment, Zhao et al., 2020) applied to real and fake inside D.

The same random transforms are applied to real and generated images as D sees them, and they
are differentiable, so G's gradient flows through them: D cannot memorise a small dataset and
G does not learn to produce the augmentations. Policies: translation, cutout, color.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> list[str]:
    return [part.strip() for part in policy.split(",") if part.strip()]


def check_policy(policy: str, key: str = "augment") -> None:
    """Raise ConfigError naming `key` when the policy holds an unknown transform."""
    from gandist.errors import ConfigError

    for part in parse_policy(policy):
        if part not in POLICIES:
            raise ConfigError(
                f"unknown augmentation {part!r} in {key}={policy!r}; "
                f"use a comma list of {', '.join(POLICIES)} (or empty for none)"
            )


def _colour(x: torch.Tensor) -> torch.Tensor:
    batch = x.shape[0]
    rand = lambda: torch.rand(batch, 1, 1, 1, device=x.device, dtype=x.dtype)  # noqa: E731
    x = x + (rand() - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (rand() * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (rand() + 0.5) + mean  # contrast


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    # Shift each image by up to 1/8 of its size, filling with zeros, by gathering from a
    # 1-pixel zero-padded copy (indices are integers, so gradients pass straight through).
    batch, _, height, width = x.shape
    shift_y, shift_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-shift_y, shift_y + 1, (batch, 1, 1), device=x.device)
    dx = torch.randint(-shift_x, shift_x + 1, (batch, 1, 1), device=x.device)
    grid_b, grid_y, grid_x = torch.meshgrid(
        torch.arange(batch, device=x.device),
        torch.arange(height, device=x.device),
        torch.arange(width, device=x.device),
        indexing="ij",
    )
    grid_y = torch.clamp(grid_y + dy + 1, 0, height + 1)
    grid_x = torch.clamp(grid_x + dx + 1, 0, width + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[grid_b, grid_y, grid_x].permute(0, 3, 1, 2).contiguous()


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    # Zero a random square of half the image size in each image (it may overlap the border).
    batch, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    off_y = torch.randint(0, height + (1 - size_y % 2), (batch, 1, 1), device=x.device)
    off_x = torch.randint(0, width + (1 - size_x % 2), (batch, 1, 1), device=x.device)
    ys = torch.arange(height, device=x.device)[None, :, None]
    xs = torch.arange(width, device=x.device)[None, None, :]
    rows = ((ys - (off_y - size_y // 2)) >= 0) & ((ys - (off_y - size_y // 2)) < size_y)
    cols = ((xs - (off_x - size_x // 2)) >= 0) & ((xs - (off_x - size_x // 2)) < size_x)
    inside = rows & cols  # [B, H, W]
    return x * (~inside)[:, None].to(x.dtype)


_TRANSFORMS = {"color": _colour, "translation": _translation, "cutout": _cutout}


class DiffAugment:
    """Callable applying a policy's transforms in the paper's order (colour, translation, cutout).

    Randomness comes from torch's global generator, which the Trainer seeds per rank.
    """

    def __init__(self, policy: str) -> None:
        check_policy(policy)
        parts = set(parse_policy(policy))
        self.transforms = [_TRANSFORMS[name] for name in POLICIES if name in parts]

    def __bool__(self) -> bool:
        return bool(self.transforms)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            images = transform(images)
        return images
