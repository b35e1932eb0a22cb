"""What a run tells the person watching it: one start-up summary, and warnings worth acting on."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from gandist import __version__
from gandist.data.config import DataConfig
from gandist.data.shards import expand_shards, read_manifest, redact_shards

log = logging.getLogger(__name__)


def run_facts(
    accelerator: Accelerator, cfg: Any, precision: str, batch_per_rank: int, step: int
) -> dict[str, Any]:
    """How this run was launched (run.json, the wandb config and the start-up summary)."""
    return {
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "device": str(accelerator.device),
        "mixed_precision": cfg.train.mixed_precision,
        "precision": precision,
        "batch_per_rank": batch_per_rank,
        "resumed_at_step": step,
        "data_shards": redact_shards(cfg.data.shards),  # credentials never reach run.json
        "gandist": __version__,
        "torch": torch.__version__,
        "git_commit": git_commit(),
        **slurm_facts(),
    }


def git_commit() -> str | None:
    """The commit of the gandist checkout this run imports, or None outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


SLURM_FACTS = {
    "SLURM_JOB_ID": "slurm_job_id",
    "SLURM_ARRAY_JOB_ID": "slurm_array_job_id",
    "SLURM_ARRAY_TASK_ID": "slurm_array_task_id",
    "SLURM_JOB_NODELIST": "slurm_nodelist",
    "SLURM_JOB_NUM_NODES": "slurm_num_nodes",
    "SLURM_JOB_PARTITION": "slurm_partition",
}


def slurm_facts(env: dict[str, str] | None = None) -> dict[str, str]:
    """The Slurm job id, array index and node list when this run is a Slurm job (else {})."""
    env = os.environ if env is None else env
    return {key: env[var] for var, key in SLURM_FACTS.items() if env.get(var)}


def wandb_run_kwargs(cfg: Any) -> dict[str, Any]:
    """wandb.init's naming and grouping arguments from the config's tracking section."""
    tracking = cfg.tracking
    return {
        "name": tracking.name or cfg.run_name,
        "entity": tracking.entity,
        "group": tracking.group,
        "tags": list(tracking.tags),
        "job_type": tracking.job_type,
        "notes": tracking.notes,
    }


def data_note(data: DataConfig) -> str:
    """`image shards data/glyphs: 8 shards, 2048 samples at 32 px` (sizes from the manifest)."""
    try:
        urls = expand_shards(data.shards)
    except ValueError:
        return f"{data.kind} shards {redact_shards(data.shards)}"
    manifest = read_manifest(urls[0]) or {}
    size = f", {manifest['count']} samples" if "count" in manifest else ""
    at = f" at {data.resolution} px" if data.kind == "image" else f" of {data.length} samples"
    return f"{data.kind} shards {redact_shards(data.shards)}: {len(urls)} shards{size}{at}"


def parameter_count(module: nn.Module) -> str:
    count = sum(p.numel() for p in module.parameters())
    return f"{count / 1e6:.2f}M" if count >= 1e5 else f"{count / 1e3:.1f}k"


def startup_summary(
    run_info: dict[str, Any], cfg: Any, networks: dict[str, nn.Module], data_note: str
) -> str:
    """A few lines: where the run writes, on what it runs, what it trains on what, where to look."""
    run_dir = cfg.output_dir
    nets = ", ".join(f"{name} {parameter_count(net)}" for name, net in networks.items())
    resumed = run_info["resumed_at_step"]
    start = f"resumed at step {resumed}" if resumed else "fresh start"
    tracking = "metrics.jsonl"
    if cfg.tracking.wandb:
        tracking += (
            f" + wandb ({run_info.get('wandb_mode', 'offline')}, project {cfg.tracking.project})"
        )
    return "\n".join(
        [
            f"gandist: run {cfg.run_name} in {run_dir} ({start}, {cfg.train.steps} steps)",
            f"  ranks {run_info['world_size']} x batch {run_info['batch_per_rank']} on "
            f"{run_info['device']}, precision {run_info['precision']}",
            f"  data {data_note}",
            f"  model {cfg.model.name} ({nets}), algorithm {cfg.train.algorithm}, "
            f"loss {cfg.train.loss}",
            f"  logs {tracking}; samples in {run_dir}/samples; checkpoints in {run_dir}/checkpoints",
        ]
    )


class SaturationWatch:
    """Warns once when the discriminator wins for `patience` log steps in a row.

    The signs: D is sure of both sides (D(real) near 1 and D(fake) near 0 for the logistic loss,
    or a wide logit margin for the others) while generated samples are far less diverse than
    real ones. That is when G stops learning or collapses; the usual remedies are named.
    """

    def __init__(self, patience: int = 5) -> None:
        self.patience, self.in_a_row, self.warned = patience, 0, False

    @staticmethod
    def saturated(values: dict[str, float]) -> bool:
        real, fake = values.get("train/d_real"), values.get("train/d_fake")
        if real is not None and fake is not None:
            sure = real > 0.95 and fake < 0.05
        else:
            real_logit, fake_logit = values.get("train/real_logit"), values.get("train/fake_logit")
            if real_logit is None or fake_logit is None:
                return False
            sure = real_logit - fake_logit > 6.0
        diversity, real_diversity = (
            values.get("train/sample_diversity"),
            values.get("train/real_diversity"),
        )
        collapsed = (
            diversity is not None
            and real_diversity is not None
            and diversity < 0.5 * real_diversity
        )
        return sure and collapsed

    def update(self, values: dict[str, float], step: int) -> str | None:
        """Feed one log step's values; returns the warning the first time it is due."""
        self.in_a_row = self.in_a_row + 1 if self.saturated(values) else 0
        if self.warned or self.in_a_row < self.patience:
            return None
        self.warned = True
        return (
            f"step {step}: the discriminator has won for {self.in_a_row} log steps in a row (it "
            "tells real from generated with near certainty and samples are far less diverse than "
            "real data). What usually helps: augmentation (train.augment=color,translation,cutout), "
            "a lower optim.d_lr, or an R1 penalty (reg.r1_gamma=1)"
        )
