"""Checkpoints: atomic save through Accelerate, resume from the newest complete one, pruning."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
GENERATOR_FILE = "generator.pt"
CONFIG_FILE = "config.yaml"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_root(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINTS


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).is_file()


def complete_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first; half-written ones are ignored."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and is_complete(path):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_resume(resume: str | None, run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to load for `resume` (None, `latest` or a path); None means a fresh start.

    `latest` with no checkpoint yet starts fresh, so a requeued job that never reached its first
    checkpoint simply begins again. An explicit path must be a complete checkpoint.
    """
    if resume is None:
        return None
    if resume == "latest":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if path.is_dir() and not is_complete(path) and latest_checkpoint(path):
        path = latest_checkpoint(path)  # a run directory: take its newest checkpoint
    if not (path.is_dir() and is_complete(path)):
        raise ValueError(f"resume={resume!r} is not a complete checkpoint (no {COMPLETE} marker)")
    return path


def save_checkpoint(
    accelerator: Accelerator,
    run_dir: str | os.PathLike,
    step: int,
    generator: nn.Module,
    config_yaml: str,
    keep: int,
) -> Path:
    """Save the full training state at `step`; every rank must call this.

    Written into a hidden temporary folder, marked complete, then renamed into place, so a
    process killed mid-save never leaves a checkpoint that `resume=latest` would pick up.
    Older checkpoints beyond `keep` are pruned only after the new one is complete.
    """
    root = checkpoint_root(run_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    # Models, optimizers, scaler and registered objects from the main process; RNG states from
    # every rank (random_states_<rank>.pkl), which is why all ranks take part.
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # The generator alone, loadable without Accelerate, for `gandist sample` and evaluation.
        torch.save(
            {"generator": accelerator.unwrap_model(generator).state_dict(), "step": step},
            tmp / GENERATOR_FILE,
        )
        (tmp / CONFIG_FILE).write_text(config_yaml)
        _fsync_tree(tmp)
        (tmp / COMPLETE).write_text(f"{step}\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        prune_checkpoints(run_dir, keep)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(run_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints, and stale temporary folders."""
    complete = complete_checkpoints(run_dir)
    for path in complete[: max(0, len(complete) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with file.open("rb") as f:
                os.fsync(f.fileno())


def load_generator_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Path]:
    """Generator weights from a run directory (its newest checkpoint) or a checkpoint folder.

    Returns the state dict and the checkpoint folder (which also holds the config).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if not is_complete(path):
        latest = latest_checkpoint(path)
        if latest is None:
            raise ValueError(f"{path} is neither a complete checkpoint nor a run with one")
        path = latest
    payload = torch.load(path / GENERATOR_FILE, map_location="cpu", weights_only=True)
    return payload["generator"], path


BEST = "best"
BEST_METRICS_FILE = "metrics.json"


def save_best(
    run_dir: str | os.PathLike,
    step: int,
    generator_state: dict[str, torch.Tensor],
    config_yaml: str,
    metrics: dict[str, float],
) -> Path:
    """Replace `<run>/best` with this generator and its scores (main process only).

    Written like a checkpoint (temporary folder, COMPLETE marker, rename), so `gandist sample`
    and `gandist eval` load `run/best` like any checkpoint; training state is not included.
    """
    run_dir = Path(run_dir)
    final, tmp, old = run_dir / BEST, run_dir / f".tmp-{BEST}", run_dir / f".old-{BEST}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"generator": generator_state, "step": step}, tmp / GENERATOR_FILE)
    (tmp / CONFIG_FILE).write_text(config_yaml)
    (tmp / BEST_METRICS_FILE).write_text(json.dumps({"step": step, **metrics}, indent=2) + "\n")
    _fsync_tree(tmp)
    (tmp / COMPLETE).write_text(f"{step}\n")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)  # a crash from here to the next rename leaves .old-best readable
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def best_metrics(run_dir: str | os.PathLike) -> dict[str, float] | None:
    """The scores saved with `<run>/best` (or its previous version after a crash), or None."""
    for name in (BEST, f".old-{BEST}"):
        path = Path(run_dir) / name
        if is_complete(path) and (path / BEST_METRICS_FILE).is_file():
            return json.loads((path / BEST_METRICS_FILE).read_text())
    return None
