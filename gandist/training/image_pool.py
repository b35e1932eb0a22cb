"""A history of generated images that a discriminator trains on (Shrivastava et al., 2017)."""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """Up to `size` earlier generated images, swapped with new ones at random.

    `query(images)` returns a batch of the same shape: while the pool fills, the new images
    themselves (each is stored); once full, each new image is, with probability 1/2, returned
    as is, or stored in place of a random stored image, which is returned instead. D then
    sees fakes of several recent G's, which damps oscillation (CycleGAN keeps 50).

    Draws come from the global torch CPU generator, which the checkpoint saves per rank, so a
    resumed run draws what an uninterrupted one would. The pool is per rank (a checkpoint
    component of each rank's own file): each rank's D sees its own history.
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.images: torch.Tensor | None = None  # [n <= size, C, H, W] float32

    def __len__(self) -> int:
        return 0 if self.images is None else int(self.images.shape[0])

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> the batch D trains on, [B, C, H, W] float32, no graph."""
        images = images.detach().float()
        if self.size == 0:
            return images
        if self.images is not None and self.images.device != images.device:
            self.images = self.images.to(images.device)  # after a resume: saved on the CPU
        out = []
        for image in images:
            if len(self) < self.size:
                stored = image.unsqueeze(0).clone()
                self.images = stored if self.images is None else torch.cat([self.images, stored])
                out.append(image)
            elif float(torch.rand(())) < 0.5:
                index = int(torch.randint(self.size, ()))
                assert self.images is not None
                out.append(self.images[index].clone())
                self.images[index] = image
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        # A copy: the pool keeps swapping in place after the state was taken.
        images = self.images.detach().cpu().clone() if self.images is not None else torch.empty(0)
        return {"size": self.size, "images": images}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        images = state["images"]
        self.images = images.clone() if images.numel() else None
        if len(self) > self.size:  # a resume with a smaller cycle.pool_size keeps the newest
            self.images = self.images[-self.size :] if self.size else None
