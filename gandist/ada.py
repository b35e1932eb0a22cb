"""Adaptive discriminator augmentation (ADA, Karras et al., 2020).

Every image D sees, real or fake, goes through the same random pipeline, each transform applied
to each image with probability p: blits (x-flip, 90-degree rotation, integer translation) then
colour (brightness, contrast, saturation). All of them are gathers, selections and arithmetic,
so G's gradient flows through them, and at p=0 every image comes back unchanged.

p adapts to the overfitting signal r_t = E[sign(D(real))]: a D that is sure of every real is
memorising them. Every `interval` D steps the sign sums are all-reduced once and p moves by
sign(r_t - target) * images / ramp_images, so p can cross [0, 1] in `ramp_images` images
whatever the batch size or GPU count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

# Translation up to 1/8 of the image size; brightness, contrast and saturation spreads of the
# paper's `bgc` pipeline (its Table/Appendix values).
TRANSLATE_RATIO = 0.125
BRIGHTNESS_STD = 0.2
CONTRAST_LOG2_STD = 0.5
SATURATION_LOG2_STD = 1.0


def check_ada_data(target: float, data_kind: str) -> None:
    """Refuse ADA for data that is not images, in one line."""
    from gandist.errors import ConfigError

    if target > 0 and data_kind != "image":
        raise ConfigError(
            f"train.ada_target={target} augments images but data.kind={data_kind}: "
            "set train.ada_target=0 for audio"
        )


def _chosen(batch: int, p: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """[B, 1, 1, 1] bool: which images get this transform (each with probability p)."""
    return torch.rand(batch, 1, 1, 1, device=x.device) < p


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror integer indices into [0, size - 1] (valid for offsets below size)."""
    index = index.abs()
    return (size - 1) - ((size - 1) - index).abs()


def xflip(x: torch.Tensor, p: torch.Tensor | float) -> torch.Tensor:
    return torch.where(_chosen(x.shape[0], p, x), x.flip(3), x)


def rotate90(x: torch.Tensor, p: torch.Tensor | float) -> torch.Tensor:
    # Chosen images turn by 90, 180 or 270 degrees (non-square images only by 180).
    batch, _, height, width = x.shape
    chosen = _chosen(batch, p, x)
    turns = torch.randint(1, 4, (batch, 1, 1, 1), device=x.device)
    if height != width:
        turns = torch.full_like(turns, 2)
    out = x
    for k in (1, 2, 3):
        out = torch.where(chosen & (turns == k), torch.rot90(x, k, (2, 3)), out)
    return out


def translate(x: torch.Tensor, p: torch.Tensor | float) -> torch.Tensor:
    # Integer shifts with reflection at the borders, by gathering: gradients pass straight through.
    batch, channels, height, width = x.shape
    chosen = _chosen(batch, p, x).view(batch, 1, 1)
    max_y = max(1, int(height * TRANSLATE_RATIO + 0.5))
    max_x = max(1, int(width * TRANSLATE_RATIO + 0.5))
    dy = torch.randint(-max_y, max_y + 1, (batch, 1, 1), device=x.device) * chosen
    dx = torch.randint(-max_x, max_x + 1, (batch, 1, 1), device=x.device) * chosen
    ys = _reflect(torch.arange(height, device=x.device)[None, :, None] - dy, height)  # [B, H, 1]
    xs = _reflect(torch.arange(width, device=x.device)[None, None, :] - dx, width)  # [B, 1, W]
    flat = (ys * width + xs).expand(batch, height, width).reshape(batch, 1, -1)
    gathered = x.reshape(batch, channels, -1).gather(2, flat.expand(-1, channels, -1))
    return gathered.view(batch, channels, height, width)


def colour(x: torch.Tensor, p: torch.Tensor | float) -> torch.Tensor:
    batch = x.shape[0]
    normal = lambda: torch.randn(batch, 1, 1, 1, device=x.device, dtype=x.dtype)  # noqa: E731
    x = torch.where(_chosen(batch, p, x), x + normal() * BRIGHTNESS_STD, x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = torch.exp2(normal() * CONTRAST_LOG2_STD)
    x = torch.where(_chosen(batch, p, x), (x - mean) * contrast + mean, x)
    if x.shape[1] > 1:  # saturation: towards or away from each pixel's grey value
        grey = x.mean(dim=1, keepdim=True)
        saturation = torch.exp2(normal() * SATURATION_LOG2_STD)
        x = torch.where(_chosen(batch, p, x), (x - grey) * saturation + grey, x)
    return x


PIPELINE: tuple[Callable[[torch.Tensor, Any], torch.Tensor], ...] = (
    xflip,
    rotate90,
    translate,
    colour,
)


def augment(images: torch.Tensor, p: torch.Tensor | float) -> torch.Tensor:
    """The ADA pipeline on images [B, C, H, W]: each transform on each image with probability p."""
    for transform in PIPELINE:
        images = transform(images, p)
    return images


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class AdaptiveAugment:
    """The augment probability p and its controller; a checkpoint component (`ada`).

    p and the sign sums stay on the device as tensors: no host sync per step. Randomness
    comes from torch's global generator, which the Trainer seeds per rank.
    """

    def __init__(
        self,
        target: float,
        interval: int,
        ramp_images: int,
        device: torch.device | str = "cpu",
        p: float = 0.0,
    ) -> None:
        if not 0 < target < 1:
            raise ValueError(f"ADA target must be in (0, 1), got {target}")
        self.target, self.interval, self.ramp_images = target, interval, ramp_images
        self.p = torch.tensor(float(p), device=device)
        self.rt = torch.zeros((), device=device)
        # [sum of sign(D(real)), number of reals] since the last adjustment, this rank.
        self._signs = torch.zeros(2, device=device)

    def to(self, device: torch.device | str) -> AdaptiveAugment:
        self.p, self.rt, self._signs = self.p.to(device), self.rt.to(device), self._signs.to(device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return augment(images, self.p)

    def observe(self, real_logits: torch.Tensor) -> None:
        """Accumulate the signs of D's outputs on (augmented) reals."""
        logits = real_logits.detach().float().flatten()
        self._signs += torch.stack([logits.sign().sum(), logits.new_tensor(logits.numel())])

    def adjust(
        self,
        images_since: int,
        reduce_sum: Callable[[torch.Tensor], torch.Tensor] = all_reduce_sum,
    ) -> None:
        """Move p after `images_since` global images: one all-reduce of the sign sums."""
        signs = reduce_sum(self._signs.clone())
        self.rt = torch.where(signs[1] > 0, signs[0] / signs[1].clamp(min=1), self.rt)
        step = torch.sign(self.rt - self.target) * (images_since / self.ramp_images)
        self.p = torch.where(signs[1] > 0, (self.p + step).clamp(0.0, 1.0), self.p)
        self._signs.zero_()

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"aug/p": self.p.detach().clone(), "aug/rt": self.rt.detach().clone()}

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p.cpu(), "rt": self.rt.cpu(), "signs": self._signs.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.p.device
        self.p = state["p"].to(device)
        self.rt = state["rt"].to(device)
        self._signs = state["signs"].to(device)
