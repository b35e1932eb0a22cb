"""Stopping on request outside Slurm (SIGTERM), the agreed stop step, and pruning that keeps the best."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from gandist import checkpoint, rundir
from gandist.preemption import StopRequest, stop_file_requests_stop
from tests.conftest import ROOT, gandist_cli, subprocess_env, tiny_overrides

STEPS = 200


def launch(run_dir: Path, shards: Path, log: Path, *extra: str) -> subprocess.Popen:
    overrides = tiny_overrides(
        run_dir, shards,
        **{"train.steps": STEPS, "train.checkpoint_every": 1000, "train.sample_every": 1000,
           "train.stop_check_every": 2, "tracking.wandb": False},
    )  # fmt: skip
    command = [sys.executable, "-m", "gandist.cli", "train", "configs/dcgan.yaml"]
    command += ["--num-processes", "2", *overrides, *extra]
    with log.open("a") as out:
        return subprocess.Popen(command, cwd=ROOT, env=subprocess_env(), stdout=out, stderr=out)


def logged_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    return (
        [json.loads(line)["step"] for line in path.read_text().splitlines()]
        if path.exists()
        else []
    )


def wait_until(condition, proc: subprocess.Popen, log: Path, what: str, timeout_s: float = 180):
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert proc.poll() is None, f"exited before {what}:\n{log.read_text()[-5000:]}"
        assert time.monotonic() < deadline, f"never {what}:\n{log.read_text()[-5000:]}"
        time.sleep(0.1)
    return found


def rank_process(proc: subprocess.Popen, rank: int) -> psutil.Process | None:
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "gandist.train" in child.cmdline() and child.environ().get("RANK") == str(rank):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def saved_positions(run_dir: Path, step: int) -> list[list[int]]:
    """Every rank's saved data stream position, from the ranks' own checkpoint files."""
    folder = rundir.checkpoint_dir(run_dir, step)
    files = sorted(folder.glob("rank-*.pt"))
    return [torch.load(f, weights_only=True)["data"]["position"] for f in files]


def test_sigterm_outside_slurm_checkpoints_at_one_agreed_step_and_exits_cleanly(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "train.log"

    # SIGTERM to rank 1 alone: rank 0 learns of it through the all-reduce, both save one step.
    proc = launch(run_dir, glyph_shards, log)
    try:
        wait_until(lambda: logged_steps(run_dir), proc, log, "logged")
        wait_until(lambda: rank_process(proc, 1), proc, log, "showed rank 1").send_signal(
            signal.SIGTERM
        )
        assert proc.wait(timeout=120) == 0, log.read_text()[-5000:]
    finally:
        proc.kill()
    (first,) = rundir.complete_checkpoints(run_dir)
    first_stop = int(first.name.removeprefix("step-"))
    assert 0 < first_stop < STEPS and first_stop % 2 == 0
    assert [row[0] for row in saved_positions(run_dir, first_stop)] == [first_stop, first_stop]
    assert sorted(p.name for p in first.glob("rank-*.pt")) == ["rank-00000.pt", "rank-00001.pt"]
    assert "stopped at step" in log.read_text() and "asked on another rank" in log.read_text()

    # SIGTERM to `gandist train` itself: it asks its ranks through their stop file.
    proc = launch(run_dir, glyph_shards, log, "resume=latest")
    try:
        wait_until(lambda: logged_steps(run_dir)[-1] > first_stop + 2, proc, log, "resumed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, log.read_text()[-5000:]
    finally:
        proc.kill()
    second_stop = int(rundir.latest_checkpoint(run_dir).name.removeprefix("step-"))
    assert first_stop < second_stop < STEPS
    assert logged_steps(run_dir) == list(range(2, second_stop + 1, 2))
    assert "stop file" in log.read_text()


def test_a_second_signal_never_kills_before_the_checkpoint() -> None:
    calls = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
    stop = StopRequest().install()
    try:
        assert stop.requested_locally() is None
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested_locally() == "SIGUSR1" and calls == []
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's TERM after the USR1
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested_locally() == "SIGUSR1" and calls == []  # logged, not acted on
    finally:
        stop.close()
    # Not stopped yet (no agreed step): close() hands the signals back.
    os.kill(os.getpid(), signal.SIGUSR1)
    assert calls == [signal.SIGUSR1]
    signal.signal(signal.SIGUSR1, previous)


def start_group(command: list[str], log: Path) -> subprocess.Popen:
    """`command` as the leader of a new process group, as a scheduler or a shell starts a job."""
    with log.open("a") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=subprocess_env(), stdout=out, stderr=out, start_new_session=True
        )


@pytest.mark.parametrize("num_processes", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sigterm_twice_to_the_whole_process_group_checkpoints_and_exits_0(
    tmp_path: Path, glyph_shards: Path, num_processes: int
) -> None:
    """What Slurm (preemption, scancel), Kubernetes and `kill -TERM -PGID` do: TERM to every
    process of the job, data workers included, and often a second TERM soon after."""
    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    overrides = tiny_overrides(
        run_dir, glyph_shards,
        **{"train.steps": STEPS, "train.checkpoint_every": 1000, "train.sample_every": 1000,
           "train.stop_check_every": 2, "tracking.wandb": False, "data.num_workers": 1},
    )  # fmt: skip
    command = [sys.executable, "-m", "gandist.cli", "train", "configs/dcgan.yaml"]
    command += ["--num-processes", str(num_processes), *overrides]
    proc = start_group(command, log)
    try:
        wait_until(lambda: logged_steps(run_dir), proc, log, "logged")
        # One data worker per rank (and with 2 ranks, the launcher's agent and its ranks).
        descendants = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)  # the second TERM must not kill anything either
        assert proc.wait(timeout=120) == 0, log.read_text()[-5000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "Traceback" not in text and "killed by signal" not in text, text[-5000:]
    assert len(descendants) == (1 if num_processes == 1 else 5), descendants
    (stopped,) = rundir.complete_checkpoints(run_dir)
    stop_step = int(stopped.name.removeprefix("step-"))
    assert 0 < stop_step < STEPS and stop_step % 2 == 0
    assert len(list(stopped.glob("rank-*.pt"))) == num_processes

    # resume=latest continues from the checkpoint the signal asked for.
    resumed = tiny_overrides(
        run_dir, glyph_shards,
        **{"train.steps": stop_step + 4, "train.checkpoint_every": 1000,
           "train.sample_every": 1000, "tracking.wandb": False, "resume": "latest"},
    )  # fmt: skip
    gandist_cli("train", "configs/dcgan.yaml", "--num-processes", "1", *resumed)
    assert rundir.latest_checkpoint(run_dir).name == f"step-{stop_step + 4:08d}"
    assert logged_steps(run_dir)[-1] == stop_step + 4


def test_stop_file_asks_until_a_run_acknowledges_it(tmp_path: Path) -> None:
    path = tmp_path / "stop"
    assert not stop_file_requests_stop(path)
    path.touch()  # an empty file (a trap still writing) already asks
    assert stop_file_requests_stop(path)
    StopRequest(path).acknowledge(12)
    assert not stop_file_requests_stop(path)
    assert path.read_text() == "stopped at step 12\n"
    with path.open("a") as f:
        f.write("requested by USR1\n")  # asked again after the answer
    assert stop_file_requests_stop(path)


def fake_checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    path = run_dir / "checkpoints" / (f"step-{step:08d}" if complete else f".tmp-step-{step:08d}")
    path.mkdir(parents=True)
    if complete:
        (path / rundir.COMPLETE).write_text(f"{step}\n")
    return path


def test_pruning_keeps_the_last_k_plus_the_best_and_drops_stale_temporaries(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    paths = {step: fake_checkpoint(run_dir, step) for step in (100, 200, 300, 400, 500)}
    stale = fake_checkpoint(run_dir, 600, complete=False)
    checkpoint.mark_best(run_dir, paths[200], fid=31.5)
    checkpoint.prune_checkpoints(run_dir, keep=2)
    assert [p.name for p in rundir.complete_checkpoints(run_dir)] == [
        "step-00000200", "step-00000400", "step-00000500",
    ]  # fmt: skip
    assert not stale.exists()
    assert rundir.best_checkpoint(run_dir) == paths[200]
    assert json.loads((paths[200] / rundir.BEST).read_text()) == {"fid": 31.5}

    # A new best moves the marker; the old best becomes an ordinary, prunable checkpoint.
    checkpoint.mark_best(run_dir, paths[400], fid=20.0)
    newest = fake_checkpoint(run_dir, 700)
    checkpoint.prune_checkpoints(run_dir, keep=2)
    assert [p.name for p in rundir.complete_checkpoints(run_dir)] == [
        "step-00000400", "step-00000500", "step-00000700",
    ]  # fmt: skip
    checkpoint.prune_checkpoints(run_dir, keep=1)
    assert rundir.complete_checkpoints(run_dir) == [paths[400], newest]

    # The other rule: a checkpoint linked from checkpoints/ (e.g. checkpoints/best) is kept too.
    (paths[400] / rundir.BEST).unlink()
    (run_dir / "checkpoints" / "best").symlink_to(paths[400].name)
    fake_checkpoint(run_dir, 800)
    checkpoint.prune_checkpoints(run_dir, keep=1)
    assert [p.name for p in rundir.complete_checkpoints(run_dir)] == [
        "step-00000400", "step-00000800",
    ]  # fmt: skip
    assert rundir.latest_checkpoint(run_dir).name == "step-00000800"

    with pytest.raises(ValueError, match="not a complete checkpoint"):
        checkpoint.mark_best(run_dir, fake_checkpoint(run_dir, 900, complete=False))
