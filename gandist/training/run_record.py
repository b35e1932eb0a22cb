"""What the trackers record about a launch: the config and its metadata, shard credentials redacted."""

from __future__ import annotations

import logging
import sys
from typing import Any

from gandist.config import to_dict
from gandist.data.shards import redact_shards
from gandist.training.config import Config
from gandist.training.console import wandb_run_kwargs

log = logging.getLogger(__name__)


def tracked_config(cfg: Config, info: dict[str, Any]) -> dict[str, Any]:
    """The config as trackers (wandb) record it, with the launch facts (`run_info`), and
    `data.shards` with its credentials (URL tokens, passwords, keys in `pipe:` commands)
    replaced by `***`."""
    values = to_dict(cfg) | {"world_size": info["world_size"], "run": info}
    values["data"]["shards"] = redact_shards(cfg.data.shards)
    return values


def wandb_kwargs(cfg: Config, argv: list[str] | None = None) -> dict[str, Any]:
    """wandb.init arguments of the run: its name and `tracking` settings, and `disable_meta`
    when the command line holds credentials (`data.shards=...?token=...`): wandb records the
    command line (`sys.argv`) with the metadata (host facts), so then none is collected."""
    kwargs = wandb_run_kwargs(cfg)
    line = " ".join(sys.argv if argv is None else argv)
    if redact_shards(line) != line:
        log.info("wandb: the command line holds credentials; its metadata is not recorded")
        kwargs["disable_meta"] = True
    return kwargs
