"""Shared fixtures: tiny glyph shards, small configs, and running gandist in real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Tests never reach a wandb server, and in-process runs use one thread per process like the
# launched ranks do, so two ranks fit the two cores of a CI machine.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)

NUM_GLYPH_SHARDS = 8
GLYPHS_PER_SHARD = 32


@pytest.fixture(scope="session")
def glyph_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 shards x 32 glyphs at 32 px, written once per test session."""
    from gandist.data.shards import write_manifest, write_shards
    from gandist.data.synthetic import glyph_samples

    out = tmp_path_factory.mktemp("glyphs")
    num = NUM_GLYPH_SHARDS * GLYPHS_PER_SHARD
    shards = write_shards(
        glyph_samples(num, size=32, seed=1), out, "glyphs", max_count=GLYPHS_PER_SHARD
    )
    write_manifest(out, shards, kind="image", count=num, resolution=32)
    return out


def tiny_overrides(run_dir: Path, shards: Path, **extra: object) -> list[str]:
    """Overrides for a DCGAN small enough to train a few steps in seconds on one core."""
    values: dict[str, object] = {
        "output_dir": run_dir,
        "data.shards": shards,
        "data.num_workers": 0,
        "data.shuffle_buffer": 16,
        "model.latent_dim": 16,
        "model.g_width": 8,
        "model.d_width": 8,
        "train.steps": 4,
        "train.batch_size": 8,
        "train.log_every": 2,
        "train.sample_every": 2,
        "train.num_samples": 16,
        "train.checkpoint_every": 2,
        "train.progress_bar": False,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    env.pop("WORLD_SIZE", None)
    return env


def run(
    command: list[str], timeout: float = 240, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a command from the repo root; on failure show its output in the assertion."""
    result = subprocess.run(
        command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert result.returncode == 0, (
            f"{' '.join(command)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def gandist_cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "gandist.cli", *args], **kwargs)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; each in-process Trainer gets a clean slate."""
    yield
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    PartialState._reset_state()
