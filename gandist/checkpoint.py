"""Checkpoints: atomic save through Accelerate, resume from the newest complete one, pruning."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from omegaconf import OmegaConf
from torch import nn

from gandist.config import ConfigError

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
BEST = "BEST"
GENERATOR_FILE = "generator.pt"
CONFIG_FILE = "config.yaml"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP_DIR = re.compile(r"^\.tmp-step-(\d+)$")

RESUME_MUST_MATCH = ("model", "data.resolution", "data.channels")
"""Config keys (a section covers all its keys) that shape the saved tensors: resuming a
checkpoint is refused when any of them differs from the checkpoint's own config.yaml."""


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
    """Delete all but the newest `keep` complete checkpoints, and stale temporary folders.

    A checkpoint marked best (a BEST file inside it, or the target of a symlink in
    checkpoints/) is never deleted: the run keeps the last `keep` plus the best.
    Call only after a successful save: the temporary folders left are from killed saves.
    """
    complete = complete_checkpoints(run_dir)
    protected = protected_checkpoints(run_dir)
    for path in complete[: max(0, len(complete) - keep)]:
        if path.resolve() not in protected:
            shutil.rmtree(path, ignore_errors=True)
    root = checkpoint_root(run_dir)
    for path in root.iterdir() if root.is_dir() else []:
        if _TMP_DIR.match(path.name):
            shutil.rmtree(path, ignore_errors=True)


def protected_checkpoints(run_dir: str | os.PathLike) -> set[Path]:
    """Checkpoints pruning must keep (resolved paths): marked BEST, or linked from checkpoints/."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return set()
    kept = set()
    for path in root.iterdir():
        marked = _STEP_DIR.match(path.name) and (path / BEST).is_file()
        if path.is_symlink() or marked:
            kept.add(path.resolve())
    return kept


def mark_best(run_dir: str | os.PathLike, checkpoint: str | os.PathLike, **info: Any) -> Path:
    """Mark a complete checkpoint as the run's best (main process only); unmark the previous one.

    `info` (e.g. fid=12.3) is stored in the BEST file. The marker is written before the old one
    is removed, so a crash in between leaves two protected checkpoints, never none.
    """
    checkpoint = Path(checkpoint)
    if not is_complete(checkpoint):
        raise ValueError(f"{checkpoint} is not a complete checkpoint; only those can be best")
    tmp = checkpoint / f".{BEST}.tmp"
    tmp.write_text(json.dumps(info, sort_keys=True) + "\n")
    tmp.replace(checkpoint / BEST)
    for path in complete_checkpoints(run_dir):
        if path.resolve() != checkpoint.resolve():
            (path / BEST).unlink(missing_ok=True)
    return checkpoint


def best_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint marked best (the newest if a crash left two), or None."""
    marked = [path for path in complete_checkpoints(run_dir) if (path / BEST).is_file()]
    return marked[-1] if marked else None


def config_differences(
    saved_yaml: str, current_yaml: str, keys: tuple[str, ...] = RESUME_MUST_MATCH
) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for every key under `keys` that differs.

    Keys the saved config does not have (fields added since) are not compared.
    """
    saved = _flatten(OmegaConf.to_container(OmegaConf.create(saved_yaml)))
    current = _flatten(OmegaConf.to_container(OmegaConf.create(current_yaml)))
    covered = [k for k in sorted(current) if any(k == p or k.startswith(p + ".") for p in keys)]
    return [(k, saved[k], current[k]) for k in covered if k in saved and saved[k] != current[k]]


def check_resume_compatible(checkpoint: str | os.PathLike, current_yaml: str) -> None:
    """Raise ConfigError, naming the keys that differ, if `checkpoint` was trained with a config
    whose model or data shape differs from `current_yaml`."""
    path = Path(checkpoint) / CONFIG_FILE
    if not path.is_file():
        return  # written by an older gandist; Accelerate will still refuse mismatched tensors
    differ = config_differences(path.read_text(), current_yaml)
    if differ:
        listed = "; ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, old, new in differ)
        raise ConfigError(
            f"cannot resume from {checkpoint}: it was trained with another config ({listed}). "
            f"These keys must match ({', '.join(RESUME_MUST_MATCH)}); use the checkpoint's "
            f"values, or start a new run with another output_dir"
        )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


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
