"""Every path and reader of a run directory: config, run facts, metrics, samples, checkpoints.

A run directory looks like this; nothing else in gandist spells these names:
```
runs/NAME/
  config.yaml          the resolved config of the latest launch
  run.json             how it was launched (world size, device, precision, versions)
  run.lock             held by the job training in it (host, pid, start): one job at a time
  metrics.jsonl        one JSON line per scalar log: {"step": 20, "train/d_loss": ...}
  wandb_run_id         the wandb run this directory logs to (a resumed job appends to it)
  samples/step-N.png   sample grids from fixed latents (the EMA's when there is one; audio runs:
                       the clips' spectrograms)
  samples/raw/, samples/class_K/   the raw generator's grids (with an EMA), per-class grids
  samples/step-N/clip-I.wav  audio runs: the clips themselves, at data.sample_rate
  checkpoints/step-N/  complete checkpoints (COMPLETE marker, config.yaml, generator.pt, state)
  checkpoints/abandoned-.../  checkpoints fenced off by a rollback (never resumed from)
```
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from gandist.errors import ConfigError

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
BEST = "BEST"
GENERATOR_FILE = "generator.pt"
CONFIG_FILE = "config.yaml"
RUN_INFO_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_run_id"
LOCK_FILE = "run.lock"
SAMPLES = "samples"
MAIN_SAMPLES = "samples"  # the main grid's name; others (`samples_raw`) get their own folder
RESUME_CHOICES = (
    "resume=latest (newest checkpoint, or a fresh start), a checkpoint folder or a run directory"
)
_STEP_DIR = re.compile(r"^step-(\d+)$")


def lock_path(run_dir: str | os.PathLike) -> Path:
    """The file a training job holds locked while it trains in `run_dir`."""
    return Path(run_dir) / LOCK_FILE


def checkpoint_root(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINTS


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    return checkpoint_root(run_dir) / f"step-{step:08d}"


def sample_path(
    run_dir: str | os.PathLike, step: int, suffix: str = ".png", name: str = MAIN_SAMPLES
) -> Path:
    """`samples/step-N.png` for the main grid; `samples/NAME/step-N.png` for another named one."""
    folder = Path(run_dir) / SAMPLES
    if name != MAIN_SAMPLES:
        folder = folder / name.removeprefix(f"{MAIN_SAMPLES}_")
    return folder / f"step-{step:08d}{suffix}"


def sample_grids(
    run_dir: str | os.PathLike, name: str = MAIN_SAMPLES, suffix: str = ".png"
) -> list[tuple[int, Path]]:
    """(step, path) of every grid of one name a run wrote, oldest first."""
    folder = sample_path(run_dir, 0, suffix, name).parent
    found = []
    for path in folder.glob(f"step-*{suffix}") if folder.is_dir() else []:
        match = _STEP_DIR.match(path.name.removesuffix(suffix))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def sample_clip_path(run_dir: str | os.PathLike, step: int, index: int) -> Path:
    """Clip `index` of the fixed latent batch at `step`, as a WAV file (audio runs)."""
    return Path(run_dir) / SAMPLES / f"step-{step:08d}" / f"clip-{index:03d}.wav"


def sample_clips(run_dir: str | os.PathLike, step: int) -> list[Path]:
    """The WAV files written at `step`, in latent order (empty for image runs)."""
    return sorted((Path(run_dir) / SAMPLES / f"step-{step:08d}").glob("clip-*.wav"))


def checkpoint_step(path: Path) -> int | None:
    match = _STEP_DIR.match(path.name)
    return int(match.group(1)) if match else None


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).is_file()


def complete_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first; half-written and fenced ones are ignored."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        step = checkpoint_step(path)
        if step is not None and is_complete(path):
            found.append((step, path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def best_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint marked best (the newest if a crash left two), or None."""
    marked = [path for path in complete_checkpoints(run_dir) if (path / BEST).is_file()]
    return marked[-1] if marked else None


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory holding a checkpoint folder (`run/checkpoints/step-N`)."""
    if checkpoint.parent.name == CHECKPOINTS:
        return checkpoint.parent.parent
    return checkpoint


def resolve_resume(resume: str | None, run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to load for `resume` (None, `latest` or a path); None means a fresh start.

    `latest` with no checkpoint yet starts fresh, so a requeued job that never reached its first
    checkpoint simply begins again. An explicit path must be a complete checkpoint (or a run
    directory holding one).
    """
    if resume is None:
        return None
    if resume == "latest":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if not path.exists():
        raise ConfigError(f"resume={resume!r} does not exist; use {RESUME_CHOICES}")
    if path.is_dir() and not is_complete(path) and latest_checkpoint(path):
        path = latest_checkpoint(path)  # a run directory: take its newest checkpoint
    if not (path.is_dir() and is_complete(path)):
        raise ConfigError(
            f"resume={resume!r} is not a complete checkpoint (no {COMPLETE} marker) nor a run "
            f"directory with one; use {RESUME_CHOICES}"
        )
    return path


def read_config_text(checkpoint_or_run: str | os.PathLike) -> str | None:
    path = Path(checkpoint_or_run) / CONFIG_FILE
    return path.read_text() if path.is_file() else None


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every line of the run's metrics.jsonl, in order (empty when the run logged nothing)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_metrics(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    with (Path(run_dir) / METRICS_FILE).open("a") as f:
        f.write(json.dumps(record) + "\n")


def read_run_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / RUN_INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_run_files(run_dir: str | os.PathLike, config_yaml: str, run_info: dict[str, Any]) -> None:
    """The config and launch facts of this launch (main process only)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(config_yaml)
    (run_dir / RUN_INFO_FILE).write_text(json.dumps(run_info, indent=2) + "\n")


def find_checkpoint(run_or_checkpoint: str | os.PathLike, best: bool = False) -> Path:
    """A complete checkpoint folder: the given one, or a run's newest (or best) checkpoint."""
    path = Path(run_or_checkpoint)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if best:
        marked = best_checkpoint(run_dir_of(path))
        if marked is None:
            raise ValueError(
                f"{path} has no checkpoint marked best: it never evaluated (set eval.every or "
                "eval.every_images) or ran with eval.keep_best=false"
            )
        return marked
    if is_complete(path):
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise ValueError(f"{path} is neither a complete checkpoint nor a run with one")
    return latest


def load_generator_weights(
    run_or_checkpoint: str | os.PathLike, best: bool = False
) -> tuple[dict[str, torch.Tensor], Path]:
    """Generator weights from a run directory (its newest or best checkpoint) or a checkpoint.

    Returns the state dict and the checkpoint folder (which also holds the config). Loaded with
    `weights_only=True`: a file that holds anything but tensors and plain values is refused.
    """
    folder = find_checkpoint(run_or_checkpoint, best=best)
    payload = load_tensors(folder / GENERATOR_FILE)
    if not isinstance(payload, dict) or not isinstance(payload.get("generator"), dict):
        raise ValueError(f"{folder / GENERATOR_FILE} holds no generator weights")
    return payload["generator"], folder


def generator_step(checkpoint: Path) -> int:
    return int(load_tensors(checkpoint / GENERATOR_FILE).get("step", -1))


def load_tensors(path: Path) -> Any:
    """torch.load with weights_only=True; every failure becomes one line naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except Exception as err:  # noqa: BLE001 - corrupt zip, refused pickle, truncated file...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            first = "it holds Python objects other than tensors and plain values (refused: loading them could run code)"
        raise ValueError(f"cannot load {path}: {first}") from None
