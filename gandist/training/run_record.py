"""What the run directory and the trackers record about a launch (shard credentials redacted)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch
from accelerate import Accelerator

from gandist import __version__
from gandist.config import to_dict
from gandist.data.shards import redact_shards
from gandist.training.config import Config

log = logging.getLogger(__name__)


def run_info(
    accelerator: Accelerator, cfg: Config, precision: str, batch_per_rank: int, step: int
) -> dict[str, Any]:
    """How this run was launched, for a reader of the run directory (`run.json`)."""
    return {
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "device": str(accelerator.device),
        "mixed_precision": cfg.train.mixed_precision,
        "precision": precision,
        "batch_per_rank": batch_per_rank,
        "resumed_at_step": step,
        "data_shards": redact_shards(cfg.data.shards),
        "gandist": __version__,
        "torch": torch.__version__,
    }


def tracked_config(cfg: Config, info: dict[str, Any]) -> dict[str, Any]:
    """The config as trackers (wandb) record it, with the launch facts (`run_info`), and
    `data.shards` with its credentials (URL tokens, passwords, keys in `pipe:` commands)
    replaced by `***`."""
    values = to_dict(cfg) | {"world_size": info["world_size"], "run": info}
    values["data"]["shards"] = redact_shards(cfg.data.shards)
    return values


def wandb_privacy(argv: list[str] | None = None) -> dict[str, Any]:
    """wandb.init arguments that keep credentials out of the run's metadata: wandb records the
    command line (`sys.argv`) there, so when it holds one (`data.shards=...?token=...`) that
    metadata (command line, host facts) is not collected at all."""
    line = " ".join(sys.argv if argv is None else argv)
    if redact_shards(line) == line:
        return {}
    import wandb

    log.info("wandb: the command line holds credentials; its metadata is not recorded")
    return {"settings": wandb.Settings(x_disable_meta=True)}
