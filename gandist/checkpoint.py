"""Checkpoints: atomic save of one named state container, safe resume, pruning, best, rollback.

A checkpoint holds named components, each a state dict of tensors and plain values:
- `state.pt` (written by the main process): what every rank shares, e.g. `network/generator`,
  `optimizer/g`, `scaler/d`, `ema`, `algorithm`, `progress`;
- `rank-NNNNN.pt` (one per rank): what each rank owns, its RNG states and data stream position.
Everything is loaded with `torch.load(weights_only=True)`: a crafted checkpoint cannot run code.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

from gandist.errors import ConfigError
from gandist.rundir import (
    BEST,
    COMPLETE,
    CONFIG_FILE,
    GENERATOR_FILE,
    checkpoint_dir,
    checkpoint_root,
    checkpoint_step,
    complete_checkpoints,
    is_complete,
    load_tensors,
)

log = logging.getLogger(__name__)

FORMAT = 2
SHARED_FILE = "state.pt"
_TMP_PREFIX = ".tmp-step-"
ABANDONED_PREFIX = "abandoned-"

RESUME_MUST_MATCH = ("model", "data.resolution", "data.channels", "data.kind")
"""Config keys (a section covers all its keys) that shape the saved tensors: resuming a
checkpoint is refused when any of them differs from the checkpoint's own config.yaml."""

# What to set so that a component exists, for the one-line message when a resume lacks one.
_COMPONENT_HINTS = {
    "ema": "train.ema_half_life_images > 0",
    "scaler/": "train.mixed_precision=fp16",
}


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.pt"


def _fsync_tree(path: Path) -> None:
    """fsync every file under `path` and the folders themselves, so a power loss after the
    COMPLETE marker cannot leave a checkpoint whose files are still in the page cache."""
    for file in sorted(path.rglob("*")):
        if file.is_file():
            with file.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (weights_only-loadable)."""
    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(keys), gauss],
        "numpy": [name, torch.from_numpy(np_keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, np_keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np_keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    accelerator: Accelerator,
    run_dir: str | os.PathLike,
    step: int,
    shared: Mapping[str, Stateful],
    per_rank: Mapping[str, Stateful],
    generator: torch.nn.Module,
    config_yaml: str,
    keep: int,
) -> Path:
    """Save every component at `step`; every rank must call this (each writes its own file).

    Written into a hidden temporary folder, marked complete, then renamed into place, so a
    process killed mid-save never leaves a checkpoint that `resume=latest` would pick up.
    Older checkpoints beyond `keep` are pruned only after the new one is complete.
    """
    root = checkpoint_root(run_dir)
    final = checkpoint_dir(run_dir, step)
    tmp = root / f"{_TMP_PREFIX}{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    rank = accelerator.process_index
    torch.save({name: obj.state_dict() for name, obj in per_rank.items()}, tmp / rank_file(rank))
    if accelerator.is_main_process:
        payload = {name: obj.state_dict() for name, obj in shared.items()}
        payload["format"] = {
            "version": FORMAT,
            "step": step,
            "world_size": accelerator.num_processes,
            "components": sorted(shared),
        }
        torch.save(payload, tmp / SHARED_FILE)
        # The generator alone, loadable without Accelerate, for `gandist sample` and evaluation.
        torch.save({"generator": generator.state_dict(), "step": step}, tmp / GENERATOR_FILE)
        (tmp / CONFIG_FILE).write_text(config_yaml)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _fsync_tree(tmp)
        (tmp / COMPLETE).write_text(f"{step}\n")
        with (tmp / COMPLETE).open("rb") as f:
            os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        _fsync_dir(root)
        prune_checkpoints(run_dir, keep)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(
    path: Path,
    rank: int,
    shared: Mapping[str, Stateful],
    per_rank: Mapping[str, Stateful],
    new_rank_takes: tuple[str, ...] = ("data",),
) -> dict[str, Any]:
    """Load a checkpoint's components into `shared` and this rank's into `per_rank`.

    The components must be the same set as saved (else a ConfigError names what differs). A
    rank beyond the saved world size loads only `new_rank_takes` from rank 0's file (the data
    stream, which sees the launch changed and reads a fresh order); its RNGs stay its own.
    Returns the format info.
    """
    if not (path / SHARED_FILE).is_file():
        raise ConfigError(
            f"cannot resume from {path}: it was written by an older gandist (Accelerate's pickled "
            "format), which is no longer loaded because unpickling it could run code; its "
            f"{GENERATOR_FILE} still works with `gandist sample` and `gandist eval`. Start a new "
            "run (another output_dir)"
        )
    payload = _load(path / SHARED_FILE)
    info = payload.pop("format", {})
    _check_components(path, set(payload), set(shared))
    for name, obj in shared.items():
        obj.load_state_dict(payload[name])
    own = path / rank_file(rank)
    source = own if own.is_file() else path / rank_file(0)
    states = _load(source) if source.is_file() else {}
    for name, obj in per_rank.items():
        if name in states and (source == own or name in new_rank_takes):
            obj.load_state_dict(states[name])
    return info


def _load(path: Path) -> dict[str, Any]:
    try:
        payload = load_tensors(path)
    except ValueError as err:
        raise ConfigError(f"cannot resume: {err}") from None
    if not isinstance(payload, dict):
        raise ConfigError(f"cannot resume: {path} does not hold a gandist checkpoint")
    return payload


def _check_components(path: Path, saved: set[str], current: set[str]) -> None:
    if saved == current:
        return
    parts = []
    for names, where in (
        (saved - current, "the checkpoint has"),
        (current - saved, "this run has"),
    ):
        if names:
            hints = sorted(
                {h for n in names for key, h in _COMPONENT_HINTS.items() if n.startswith(key)}
            )
            other = (
                "this run does not" if where == "the checkpoint has" else "the checkpoint does not"
            )
            hint = f" ({', '.join(hints)})" if hints else ""
            parts.append(f"{where} {', '.join(sorted(names))}{hint} and {other}")
    raise ConfigError(
        f"cannot resume from {path}: {'; '.join(parts)}. Resume with the settings it was saved "
        "with, or start a new run (another output_dir)"
    )


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
        if path.name.startswith(_TMP_PREFIX):
            shutil.rmtree(path, ignore_errors=True)


def protected_checkpoints(run_dir: str | os.PathLike) -> set[Path]:
    """Checkpoints pruning must keep (resolved paths): marked BEST, or linked from checkpoints/."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return set()
    kept = set()
    for path in root.iterdir():
        marked = checkpoint_step(path) is not None and (path / BEST).is_file()
        if path.is_symlink() or marked:
            kept.add(path.resolve())
    return kept


def fence_newer_checkpoints(run_dir: str | os.PathLike, resumed_from: Path) -> Path | None:
    """Move the run's checkpoints newer than `resumed_from` out of `resume=latest`'s sight.

    Resuming from an older checkpoint starts a new line of training; without this, a later
    `resume=latest` (a Slurm requeue) would jump back to the abandoned, higher-step line. They
    go to `checkpoints/abandoned-<time>-from-step-N/`, kept for a human to inspect. Main process.
    """
    step = checkpoint_step(resumed_from)
    if step is None or resumed_from.parent.resolve() != checkpoint_root(run_dir).resolve():
        return None
    newer = [p for p in complete_checkpoints(run_dir) if (checkpoint_step(p) or 0) > step]
    if not newer:
        return None
    fence = checkpoint_root(run_dir) / (
        f"{ABANDONED_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-from-step-{step:08d}"
    )
    fence.mkdir(parents=True, exist_ok=True)
    for path in newer:
        path.rename(fence / path.name)
    _fsync_dir(checkpoint_root(run_dir))
    log.warning(
        "resumed from step %d while the run had newer checkpoints (%s): moved them to %s so "
        "resume=latest continues this line",
        step,
        ", ".join(p.name for p in newer),
        fence,
    )
    return fence


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
        return
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
