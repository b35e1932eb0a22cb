"""One job per run directory: a second job refuses with one line naming the holder; the lock of
a job that died is taken over."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gandist import rundir
from tests.conftest import ROOT, gandist_cli, run, subprocess_env, tiny_overrides
from tests.test_preemption import logged_steps, wait_until


def start_training(run_dir: Path, shards: Path, log: Path) -> subprocess.Popen:
    """A job that trains on (for minutes) in `run_dir`, one process."""
    overrides = tiny_overrides(
        run_dir, shards, **{"train.steps": 100_000, "train.checkpoint_every": 100_000,
                            "train.sample_every": 100_000, "tracking.wandb": False},
    )  # fmt: skip
    command = [sys.executable, "-m", "gandist.cli", "train", "configs/dcgan.yaml", *overrides]
    with log.open("a") as out:
        return subprocess.Popen(command, cwd=ROOT, env=subprocess_env(), stdout=out, stderr=out)


TRAIN_WITHOUT_STARTUP_CHECK = """
import sys
from gandist.training.config import load_config
from gandist.training.runlock import RunLockedError
from gandist.training.trainer import Trainer
try:
    Trainer(load_config(sys.argv[1], sys.argv[2:])).train()
except RunLockedError as err:
    print(f"refused: {err}", file=sys.stderr)
    sys.exit(1)
"""


@pytest.mark.slow
def test_a_second_job_on_a_run_directory_refuses_and_a_dead_jobs_lock_is_taken_over(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "first.log"
    overrides = [*tiny_overrides(run_dir, glyph_shards), "resume=latest", "tracking.wandb=false"]
    first = start_training(run_dir, glyph_shards, log)
    try:
        wait_until(lambda: logged_steps(run_dir), first, log, "logged")
        holder = f"host {socket.gethostname()} pid {first.pid} since "
        # The resubmitted job: refused before any process starts, naming the job that trains.
        second = gandist_cli("train", "configs/dcgan.yaml", *overrides, check=False)
        assert second.returncode == 2, second.stderr
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith(f"gandist: error: {run_dir} is in use by another job ({holder}")
        # One that got past that check (started at the same moment): the Trainer refuses too,
        # before it writes anything.
        racing = run(
            [sys.executable, "-c", TRAIN_WITHOUT_STARTUP_CHECK, "configs/dcgan.yaml", *overrides],
            check=False,
        )
        assert racing.returncode == 1 and f"refused: {run_dir} is in use" in racing.stderr
        assert holder in racing.stderr
        assert first.poll() is None  # and the first job trains on, untouched
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock
        first.wait()
    assert (run_dir / rundir.LOCK_FILE).read_text().startswith(holder)  # a dead job's lock
    gandist_cli("train", "configs/dcgan.yaml", *overrides)  # takes it over and trains
    assert rundir.latest_checkpoint(run_dir).name == "step-00000004"
    assert (run_dir / rundir.LOCK_FILE).read_text() == ""  # released at the end
