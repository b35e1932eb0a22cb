"""Experiment tracking: wandb through Accelerate, a metrics.jsonl file, and sample grids on disk."""

from __future__ import annotations

import json
import logging
import math
import netrc
import os
import secrets
import string
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from torchvision.utils import make_grid, save_image

from gandist.rundir import METRICS_FILE, WANDB_ID_FILE, sample_path

log = logging.getLogger(__name__)


class JsonlTracker(GeneralTracker):
    """An Accelerate tracker that appends every scalar log as one JSON line.

    It makes a run readable with no tracking service at all: `{"step": 20, "train/d_loss": ...}`.
    Accelerate calls it on the main process only; the file is opened per write so nothing is
    held open across a crash.
    """

    name = "jsonl"
    requires_logging_directory = False

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(path)

    @property
    def tracker(self) -> Path:
        return self.path

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        scalars = {k: _scalar(v) for k, v in values.items() if _scalar(v) is not None}
        if not scalars:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")


def _scalar(value: Any) -> float | int | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # type: ignore[return-value]
    return None


def wandb_mode() -> str:
    """`WANDB_MODE` when set; otherwise online only if an API key is configured, else offline.

    Offline runs are written under the run directory and can be uploaded later with `wandb sync`.
    """
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
        if netrc.netrc().authenticators(host):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def wandb_run_id(run_dir: Path) -> str:
    """The run directory's wandb id, created once: a resumed job continues the same wandb run."""
    path = run_dir / WANDB_ID_FILE
    if path.exists():
        return path.read_text().strip()
    alphabet = string.ascii_lowercase + string.digits
    run_id = "".join(secrets.choice(alphabet) for _ in range(8))
    path.write_text(run_id + "\n")
    return run_id


def image_grid(images: torch.Tensor, path: str | os.PathLike | None = None) -> torch.Tensor:
    """Arrange images [B, C, H, W] in [-1, 1] into one grid [C, H', W'] in [0, 1]; save it if asked."""
    nrow = max(1, int(math.sqrt(images.shape[0])))
    grid = make_grid(
        images.float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1), padding=2
    )
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
    return grid


def grid_to_uint8(grid: torch.Tensor) -> np.ndarray:
    """A grid [C, H, W] in [0, 1] as the uint8 [H, W, C] pixels `save_image` writes to the PNG.

    wandb casts float images to uint8 without scaling, so a [0, 1] float grid became all
    zeros (black) in every dashboard: hand it the same bytes as the file on disk.
    """
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 0).cpu().numpy()


class Tracker:
    """Where a run reports: metrics.jsonl always, wandb when enabled, sample grids on disk.

    Built on Accelerate's trackers (`log_with`), which act on the main process only.
    """

    def __init__(self, accelerator: Accelerator, run_dir: Path, use_wandb: bool) -> None:
        self.accelerator = accelerator
        self.run_dir = Path(run_dir)
        self.use_wandb = use_wandb

    @staticmethod
    def log_with(run_dir: Path, use_wandb: bool) -> list:
        """The trackers to hand to the Accelerator when it is built."""
        return [JsonlTracker(Path(run_dir) / METRICS_FILE), *(["wandb"] if use_wandb else [])]

    def start(self, project: str, config: dict[str, Any], wandb_kwargs: dict[str, Any]) -> None:
        init_kwargs: dict[str, Any] = {}
        if self.use_wandb and self.accelerator.is_main_process:
            init_kwargs["wandb"] = {
                "dir": str(self.run_dir),
                "mode": wandb_mode(),
                # One wandb run per run directory: a resumed job appends to it.
                "id": wandb_run_id(self.run_dir),
                "resume": "allow",
                **wandb_kwargs,
            }
        self.accelerator.init_trackers(project, config=config, init_kwargs=init_kwargs)

    def log_scalars(self, values: dict[str, Any], step: int) -> None:
        self.accelerator.log(values, step=step)

    def log_samples(self, samples: torch.Tensor, step: int) -> Path | None:
        """Write a grid of images [B, C, H, W] in [-1, 1] to samples/ and wandb (main process)."""
        if not self.accelerator.is_main_process:
            return None
        path = sample_path(self.run_dir, step)
        grid = image_grid(samples, path)
        if self.use_wandb:
            self.accelerator.get_tracker("wandb").log_images(
                {"samples": [grid_to_uint8(grid)]}, step=step
            )
        return path

    def finish(self) -> None:
        self.accelerator.end_training()
