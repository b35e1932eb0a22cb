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

import torch
from accelerate.tracking import GeneralTracker
from torchvision.utils import make_grid, save_image

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_run_id"


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
