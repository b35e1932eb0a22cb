"""The Trainer's side of checkpoints: its counters, this rank's RNGs, save and resume."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from gandist import checkpoint
from gandist.distributed import assert_ranks_in_sync
from gandist.rundir import checkpoint_dir, resolve_resume
from gandist.training.updater import NonFiniteTrainingError

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Counters saved with every checkpoint."""

    step: int = 0
    images_seen: int = 0
    skipped_updates: int = 0
    earlier_s: float = 0.0  # wall-clock seconds of the launches before this one
    _launched: float = field(default_factory=time.monotonic, repr=False)

    @property
    def hours(self) -> float:
        """Wall-clock hours of training over every launch of the run (the `train/hours` axis)."""
        return (self.earlier_s + time.monotonic() - self._launched) / 3600

    def state_dict(self) -> dict[str, int | float]:
        return {
            "step": self.step,
            "images_seen": self.images_seen,
            "skipped": self.skipped_updates,
            "wall_s": self.hours * 3600,
        }

    def load_state_dict(self, state: dict[str, int | float]) -> None:
        self.step, self.images_seen = int(state["step"]), int(state["images_seen"])
        self.skipped_updates = int(state.get("skipped", 0))
        self.earlier_s = float(state.get("wall_s", 0.0))
        self._launched = time.monotonic()


class RngState:
    """This rank's RNG states (python, numpy, torch, CUDA) as a checkpoint component."""

    def state_dict(self) -> dict[str, Any]:
        return checkpoint.rng_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        checkpoint.set_rng_state(state)


class Checkpointer:
    """Saves and resumes the Trainer's named components (`shared` by all ranks, `per_rank`)."""

    def __init__(
        self, accelerator: Accelerator, run_dir: Path, config_yaml: str, keep: int
    ) -> None:
        self.accelerator, self.run_dir = accelerator, run_dir
        self.config_yaml, self.keep = config_yaml, keep
        self.last_saved_step = -1

    def save(
        self, step: int, shared: dict[str, Any], per_rank: dict[str, Any], generator: nn.Module
    ) -> Path:
        """Save every component (collective). A network with a non-finite weight is never saved:
        the run stops instead, and its last good checkpoint stays the newest."""
        networks = {k: v for k, v in shared.items() if isinstance(v, nn.Module)}
        for name, module in networks.items():
            if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
                raise NonFiniteTrainingError(
                    f"{name} has non-finite weights at step {step}; not saving it over the last "
                    "good checkpoint (resume=latest continues from that one)"
                )
        assert_ranks_in_sync(self.accelerator, networks)
        self.last_saved_step = step
        path = checkpoint.save_checkpoint(
            self.accelerator, self.run_dir, step, shared, per_rank, generator, self.config_yaml,
            keep=self.keep,
        )  # fmt: skip
        if self.accelerator.is_main_process:
            log.info("saved checkpoint %s", path)
        return path

    def saved_now(
        self, step: int, shared: dict[str, Any], per_rank: dict[str, Any], generator: nn.Module
    ) -> Path:
        """This step's checkpoint, saved now unless the loop just did."""
        if self.last_saved_step == step:
            return checkpoint_dir(self.run_dir, step)
        return self.save(step, shared, per_rank, generator)

    def resume(
        self, resume: str | None, shared: dict[str, Any], per_rank: dict[str, Any]
    ) -> Path | None:
        """Load the checkpoint `resume` names (None: a fresh start) into the components.

        Resuming from an older checkpoint than the run's newest fences the newer ones off, so
        a later `resume=latest` continues this line of training (main process).
        """
        path = resolve_resume(resume, self.run_dir)
        is_main = self.accelerator.is_main_process
        if path is None:
            if resume == "latest" and is_main:
                log.info("resume=latest: no checkpoint in %s yet, starting fresh", self.run_dir)
            return None
        checkpoint.check_resume_compatible(path, self.config_yaml)
        checkpoint.load_checkpoint(path, self.accelerator.process_index, shared, per_rank)
        self.accelerator.wait_for_everyone()
        if is_main:
            checkpoint.fence_newer_checkpoints(self.run_dir, path)
        self.accelerator.wait_for_everyone()
        return path
