"""What the trackers record about a launch: the config and its metadata, shard credentials redacted."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from gandist.config import to_dict
from gandist.data.shards import redact_shards
from gandist.rundir import CONFIG_FILE, checkpoint_root
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


PRIVATE_UMASK = 0o077


def holds_credentials(cfg: Config) -> bool:
    """Whether `data.shards` or `data.shards_b` carry credentials (what `redact_shards` hides)."""
    return any(redact_shards(spec) != spec for spec in (cfg.data.shards, cfg.data.shards_b))


def keep_credentials_private(cfg: Config) -> bool:
    """For a run whose shards carry credentials: this process's umask becomes 077, so every file
    and folder it writes is its owner's alone (mode 0600 / 0700), and a run directory made by an
    earlier launch is closed the same way. Returns whether the run is private.

    `config.yaml` (the run's, and each checkpoint's) keeps `data.shards` as given, because
    resume, `gandist eval` and `gandist sample` read the shards from it; everything that is
    shown or shared (logs, run.json, wandb) is redacted instead.
    """
    if not holds_credentials(cfg):
        return False
    os.umask(PRIVATE_UMASK)
    # A wandb service started by a parent process (its token in WANDB_SERVICE, which wandb
    # hands to child processes) would write this run's wandb files with that process's umask:
    # the run starts its own service instead, under this one.
    os.environ.pop("WANDB_SERVICE", None)
    run_dir = Path(cfg.output_dir)
    if run_dir.is_dir():  # an earlier launch, perhaps without credentials: close it too
        run_dir.chmod(0o700)
        for path in [run_dir / CONFIG_FILE, *checkpoint_root(run_dir).glob(f"*/{CONFIG_FILE}")]:
            if path.is_file():
                path.chmod(0o600)
    log.info("data.shards carries credentials: the run directory is private (umask 077)")
    return True
