"""Checkpoints that survive anything: exact resume after a stop, SIGKILL mid-save, config refusal."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gandist import rundir
from gandist.errors import ConfigError
from gandist.training.algorithm import Phase
from gandist.training.config import load_config
from gandist.training.trainer import Trainer
from tests.conftest import ROOT, run, subprocess_env, tiny_overrides

STEPS = 10  # 2N with N = 5: an odd stop step, so the resumed loader starts on worker role 1


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread like the launched ranks: two threads on two busy cores run 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def exact_overrides(run_dir: Path, shards: Path, **extra: object) -> list[str]:
    return tiny_overrides(
        run_dir,
        shards,
        **{
            "data.num_workers": 2,
            "train.steps": STEPS,
            "train.checkpoint_every": 100,
            "train.sample_every": 100,
            "train.log_every": 3,
            "train.stop_check_every": 1,
            "tracking.wandb": False,
            **extra,
        },
    )


def snapshot(trainer: Trainer) -> dict[str, object]:
    """Everything that must match bit for bit: weights, buffers, optimizer moments, RNGs, data."""
    local = trainer.algorithm.local
    g_adam = trainer.updaters["g"].torch_optimizer.state.values()
    d_adam = trainer.updaters["d"].torch_optimizer.state.values()
    return {
        "generator": {k: v.clone() for k, v in local("generator").state_dict().items()},
        "discriminator": {k: v.clone() for k, v in local("discriminator").state_dict().items()},
        "g_adam": [s["exp_avg"].clone() for s in g_adam],
        "d_adam": [s["exp_avg_sq"].clone() for s in d_adam],
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state()[1].copy(),
        "data_positions": trainer.data.state_dict()["position"],
        "step": trainer.progress.step,
        "images_seen": trainer.progress.images_seen,
    }


def assert_identical(a: object, b: object, where: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), f"{where} differs"
    else:
        assert a == b, f"{where}: {a} != {b}"


def test_stop_and_resume_is_bit_exact_with_an_uninterrupted_run(
    tmp_path: Path, glyph_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = Trainer(load_config(None, exact_overrides(tmp_path / "straight", glyph_shards)))
    assert straight.train().step == STEPS
    expected = snapshot(straight)

    # The same run, sent SIGTERM during step N: it checkpoints after step N and leaves the loop.
    run_dir = tmp_path / "stopped"
    first = Trainer(load_config(None, exact_overrides(run_dir, glyph_shards)))
    run_phase = first.run_phase

    def g_phase_then_sigterm(phase: Phase) -> dict[str, torch.Tensor]:
        if phase.name == "g" and first.progress.step == STEPS // 2 - 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return run_phase(phase)

    monkeypatch.setattr(first, "run_phase", g_phase_then_sigterm)
    assert first.train().step == STEPS // 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler must be restored"
    saved = [p.name for p in rundir.complete_checkpoints(run_dir)]
    assert saved == [f"step-{STEPS // 2:08d}"]

    resumed = Trainer(load_config(None, exact_overrides(run_dir, glyph_shards, resume="latest")))
    assert resumed.train().step == STEPS
    assert_identical(snapshot(resumed), expected)
    assert resumed.data.state_dict()["position"][0] == STEPS


def test_stop_file_stops_the_run_and_records_the_step(tmp_path: Path, glyph_shards: Path) -> None:
    stop_file = tmp_path / "stop"
    stop_file.write_text("requested by USR1\n")
    cfg = load_config(
        None,
        exact_overrides(
            tmp_path / "run", glyph_shards, **{"data.num_workers": 0, "train.stop_check_every": 3}
        ),
    )
    os.environ["GANDIST_STOP_FILE"] = str(stop_file)
    try:
        state = Trainer(cfg).train()
    finally:
        del os.environ["GANDIST_STOP_FILE"]
    assert state.step == 3
    assert rundir.latest_checkpoint(tmp_path / "run").name == "step-00000003"
    assert stop_file.read_text().splitlines() == ["requested by USR1", "stopped at step 3"]

    # An acknowledged stop file no longer asks anything: the next launch trains to the end.
    os.environ["GANDIST_STOP_FILE"] = str(stop_file)
    try:
        cfg.resume = "latest"
        assert Trainer(cfg).train().step == STEPS
    finally:
        del os.environ["GANDIST_STOP_FILE"]


BLOCKING_TRAIN = """
import os, sys, time
from pathlib import Path
from gandist import checkpoint, rundir, train

saves = []
fsync_tree = checkpoint._fsync_tree

def fsync_tree_or_block(path):
    # Every file of the checkpoint is written, its COMPLETE marker is not: the riskiest moment.
    saves.append(path)
    if len(saves) == int(os.environ["BLOCK_IN_SAVE"]):
        Path(os.environ["BLOCKED_FILE"]).write_text(str(path))
        time.sleep(600)
    fsync_tree(path)

checkpoint._fsync_tree = fsync_tree_or_block
sys.exit(train.main(sys.argv[1:]))
"""


def test_sigkill_in_the_middle_of_a_save_leaves_the_previous_checkpoint_usable(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, glyph_shards, **{"train.steps": 6, "tracking.wandb": False})
    blocked = tmp_path / "blocked"
    env = subprocess_env() | {"BLOCK_IN_SAVE": "2", "BLOCKED_FILE": str(blocked)}
    command = [sys.executable, "-c", BLOCKING_TRAIN, "configs/dcgan.yaml", *overrides]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not blocked.exists():
            assert proc.poll() is None, (
                f"training ended before its second save:\n{proc.stdout.read()}"
            )
            assert time.monotonic() < deadline, "the second save never started"
            time.sleep(0.05)
        half_written = Path(blocked.read_text())
        assert half_written.name == ".tmp-step-00000004"
        assert (half_written / "state.pt").is_file(), "the model files should be written"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.stdout.close()

    assert not (half_written / rundir.COMPLETE).exists()
    assert rundir.latest_checkpoint(run_dir).name == "step-00000002"
    weights, _ = rundir.load_generator_weights(run_dir)
    assert weights and all(torch.isfinite(w).all() for w in weights.values())

    run([sys.executable, "-m", "gandist.train", "configs/dcgan.yaml", *overrides, "resume=latest"])
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["step-00000002", "step-00000004", "step-00000006"]  # stale .tmp removed
    info = (run_dir / "run.json").read_text()
    assert '"resumed_at_step": 2' in info


def test_resuming_from_an_incompatible_config_names_the_keys_that_differ(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, glyph_shards, **{"train.steps": 2, "tracking.wandb": False})
    Trainer(load_config(None, overrides)).train()

    changed = [*overrides, "resume=latest", "model.g_width=16", "data.channels=1"]
    result = run(
        [sys.executable, "-m", "gandist.train", "configs/dcgan.yaml", *changed], check=False
    )
    assert result.returncode == 2, result.stderr
    message = result.stderr
    assert "cannot resume from" in message and "step-00000002" in message
    assert "model.g_width: 8 in the checkpoint, 16 now" in message
    assert "data.channels: 3 in the checkpoint, 1 now" in message
    assert "Traceback" not in message

    # In-process too, before any tensor is loaded; keys that do not shape tensors may change.
    with pytest.raises(ConfigError, match="model.g_width"):
        Trainer(load_config(None, changed)).train()
    fine = [*overrides, "resume=latest", "train.steps=3", "optim.g_lr=0.001", "train.batch_size=4"]
    assert Trainer(load_config(None, fine)).train().step == 3
