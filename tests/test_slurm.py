"""slurm/*.sbatch on a real one-node Slurm cluster: 2 CPU ranks, USR1 stop and requeue, sweeps."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from tests import wandb_log
from tests.conftest import ROOT, subprocess_env, tiny_overrides
from tests.slurm_cluster import GRACE_TIME_S, Cluster, SlurmUnavailable, start_cluster

pytestmark = pytest.mark.dist

STOP_RUN_STEPS = 120
STOP_CHECK_EVERY = 20  # the preemption test: room for a second TERM before the save


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    try:
        started = start_cluster(tmp_path_factory.mktemp("slurm"), cpus=2)
    except SlurmUnavailable as err:
        if os.environ.get("GANDIST_REQUIRE_SLURM") == "1":
            pytest.fail(f"GANDIST_REQUIRE_SLURM=1 but Slurm is unavailable: {err}")
        pytest.skip(f"Slurm is unavailable: {err}")
    started.env.update(subprocess_env(), GANDIST_PYTHON=sys.executable)
    yield started
    started.stop()


def submit(cluster: Cluster, *args: str) -> str:
    out = cluster.command("sbatch", "--parsable", "--chdir", str(ROOT), *args)
    return out.strip().split(";")[0]


def wait_for(
    cluster: Cluster, job: str, done, what: str, log: Path | None = None, timeout_s: float = 240
):
    deadline = time.monotonic() + timeout_s
    while True:
        states = cluster.jobs(job)
        if done(states):
            return states
        if time.monotonic() > deadline:
            text = log.read_text()[-6000:] if log and log.exists() else ""
            pytest.fail(f"job {job} never {what}: {states}\n--- job log\n{text}\n{cluster.logs()}")
        time.sleep(0.5)


def finished(states: list[dict[str, str]]) -> bool:
    return all(s["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for s in states)


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_accelerate_config_files_load_with_the_launchers_own_reader() -> None:
    configs = {
        p.name: load_config_from_file(str(p)) for p in (ROOT / "launch/accelerate").glob("*.yaml")
    }
    assert configs["one_gpu.yaml"].distributed_type == DistributedType.NO
    assert configs["one_node_multi_gpu.yaml"].distributed_type == DistributedType.MULTI_GPU
    two_cpu = configs["two_cpu_ranks.yaml"]
    # MULTI_GPU, not MULTI_CPU or use_cpu: those start one process (ENVIRONMENT.md).
    assert (two_cpu.distributed_type, two_cpu.num_processes, two_cpu.use_cpu) == (
        DistributedType.MULTI_GPU, 2, False,
    )  # fmt: skip
    assert all(c.mixed_precision == "no" for c in configs.values())


def test_sbatch_trains_two_cpu_ranks_and_writes_the_run_directory(
    cluster: Cluster, tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    log = tmp_path / "job.out"
    job = submit(
        cluster, "--cpus-per-task=2", f"--output={log}", "slurm/train.sbatch",
        "configs/dcgan.yaml", *tiny_overrides(run_dir, glyph_shards, **{"tracking.wandb": False}),
    )  # fmt: skip
    (state,) = wait_for(cluster, job, finished, "finished", log)
    assert state["JobState"] == "COMPLETED", log.read_text()[-6000:]

    info = json.loads((run_dir / "run.json").read_text())
    assert (info["world_size"], info["distributed_type"]) == (2, "DistributedType.MULTI_CPU")
    assert [r["step"] for r in read_metrics(run_dir)] == [2, 4]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step-00000002", "step-00000004",
    ]  # fmt: skip
    assert len(list((run_dir / "samples").glob("*.png"))) == 2
    assert "on 1 node(s) x 2 rank(s)" in log.read_text()


@pytest.mark.slow
def test_usr1_checkpoints_requeues_and_the_job_resumes_the_same_run(
    cluster: Cluster, tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    log = tmp_path / "job.out"
    overrides = tiny_overrides(
        run_dir, glyph_shards,
        **{"train.steps": STOP_RUN_STEPS, "train.checkpoint_every": 1000, "train.sample_every": 1000,
           "train.stop_check_every": 2},
    )  # fmt: skip
    job = submit(
        cluster,
        "--cpus-per-task=2",
        f"--output={log}",
        "slurm/train.sbatch",
        "configs/dcgan.yaml",
        *overrides,
    )

    deadline = time.monotonic() + 240
    while not read_metrics(run_dir):
        assert time.monotonic() < deadline, f"training never logged\n{log.read_text()[-6000:]}"
        assert not finished(cluster.jobs(job)), log.read_text()[-6000:]
        time.sleep(0.2)
    cluster.command("scancel", "--batch", "--signal=USR1", job)  # what --signal=B:USR1@T sends

    (state,) = wait_for(
        cluster,
        job,
        lambda s: s[0]["JobState"] == "PENDING" and s[0]["Restarts"] == "1",
        "requeued",
        log,
    )
    (stopped_at,) = [p.name for p in (run_dir / "checkpoints").iterdir()]
    stop_step = int(stopped_at.removeprefix("step-"))
    assert 0 < stop_step < STOP_RUN_STEPS and stop_step % 2 == 0  # an agreed check step
    assert f"stopped at step {stop_step}; requeueing job {job}" in log.read_text()

    # Skip the ~160 s requeue delay. slurmd refuses a credential issued in the same second as the
    # previous run's revocation ("Job credential revoked"), so let that second pass first.
    time.sleep(2)
    cluster.command("scontrol", "update", f"JobId={job}", "StartTime=now")
    (state,) = wait_for(cluster, job, finished, "finished after its requeue", log)
    assert state["JobState"] == "COMPLETED", log.read_text()[-6000:]

    # One continuous run: every log step once, resumed from the stop checkpoint.
    assert [r["step"] for r in read_metrics(run_dir)] == list(range(2, STOP_RUN_STEPS + 1, 2))
    assert json.loads((run_dir / "run.json").read_text())["resumed_at_step"] == stop_step
    assert "job " + job + " (restart 1)" in log.read_text()

    # One wandb run: two launches append to the same run id, steps keep increasing.
    files = wandb_log.run_files(run_dir)
    assert len(files) == 2
    assert set.union(*(wandb_log.run_ids(f) for f in files)) == {
        (run_dir / "wandb_run_id").read_text().strip()
    }
    steps = [row["_step"] for f in files for row in wandb_log.history(f) if "train/d_loss" in row]
    assert steps == list(range(2, STOP_RUN_STEPS + 1, 2))


def test_sweep_array_runs_each_line_in_its_own_directory_and_one_wandb_group(
    cluster: Cluster, tmp_path: Path, glyph_shards: Path
) -> None:
    sweep = tmp_path / "lr.txt"
    sweep.write_text(
        "# two learning rates\noptim.g_lr=0.0001\n\noptim.g_lr=0.0003 model.g_width=4\n"
    )
    parent = tmp_path / "sweep"
    cluster.env["GANDIST_SWEEP_DIR"] = str(parent)
    try:
        job = submit(
            cluster, "--array=0-1", "--cpus-per-task=1", f"--output={tmp_path}/job-%a.out",
            "slurm/sweep.sbatch", str(sweep), "configs/dcgan.yaml",
            *tiny_overrides(tmp_path / "ignored", glyph_shards),
        )  # fmt: skip
    finally:
        del cluster.env["GANDIST_SWEEP_DIR"]
    states = wait_for(
        cluster, job, lambda s: len(s) == 2 and finished(s), "finished", tmp_path / "job-0.out"
    )
    assert [s["JobState"] for s in states] == ["COMPLETED", "COMPLETED"], (
        tmp_path / "job-1.out"
    ).read_text()

    group = f"lr-{job}"
    configs = [(parent / str(i) / "config.yaml").read_text() for i in (0, 1)]
    assert "g_lr: 0.0001" in configs[0] and "g_lr: 0.0003" in configs[1]
    assert "g_width: 8" in configs[0] and "g_width: 4" in configs[1]
    runs = []
    for index in (0, 1):
        (run_file,) = wandb_log.run_files(parent / str(index))
        (run,) = [
            r.run for r in wandb_log.records(run_file) if r.WhichOneof("record_type") == "run"
        ][:1]
        runs.append((run.run_group, run.display_name, run.run_id))
    assert [r[0] for r in runs] == [group, group]
    assert [r[1] for r in runs] == [f"{group}-0", f"{group}-1"]
    assert runs[0][2] != runs[1][2]


def test_scancel_without_a_signal_checkpoints_before_the_kill_and_the_job_resumes(
    cluster: Cluster, tmp_path: Path, glyph_shards: Path
) -> None:
    """`scancel JOB` (and preemption with a grace time): SIGTERM to every process of the job,
    the launcher's agent, the ranks and their data workers, then SIGKILL after KillWait (10 s
    here). The ranks checkpoint at an agreed step before the kill."""
    run_dir, log = tmp_path / "run", tmp_path / "job.out"
    overrides = tiny_overrides(
        run_dir, glyph_shards,
        **{"train.steps": STOP_RUN_STEPS, "train.checkpoint_every": 1000, "train.sample_every": 1000,
           "train.stop_check_every": 2, "data.num_workers": 1, "tracking.wandb": False},
    )  # fmt: skip
    args = ["--cpus-per-task=2", f"--output={log}", "slurm/train.sbatch", "configs/dcgan.yaml"]
    job = submit(cluster, *args, *overrides)
    deadline = time.monotonic() + 240
    while not read_metrics(run_dir):
        assert time.monotonic() < deadline, f"training never logged\n{log.read_text()[-6000:]}"
        assert not finished(cluster.jobs(job)), log.read_text()[-6000:]
        time.sleep(0.2)
    cluster.command("scancel", job)
    wait_for(cluster, job, finished, "ended after scancel", log)
    (stopped,) = rundir_checkpoints(run_dir)
    stop_step = int(stopped.name.removeprefix("step-"))
    assert 0 < stop_step < STOP_RUN_STEPS and stop_step % 2 == 0, log.read_text()[-6000:]
    assert len(list(stopped.glob("rank-*.pt"))) == 2
    assert "killed by signal" not in log.read_text()

    # Submitted again, the job continues from that checkpoint (resume=latest) to the end.
    job = submit(cluster, *args, *overrides)
    (state,) = wait_for(cluster, job, finished, "finished", log)
    assert state["JobState"] == "COMPLETED", log.read_text()[-6000:]
    assert json.loads((run_dir / "run.json").read_text())["resumed_at_step"] == stop_step
    assert [r["step"] for r in read_metrics(run_dir)] == list(range(2, STOP_RUN_STEPS + 1, 2))


def rundir_checkpoints(run_dir: Path) -> list[Path]:
    from gandist import rundir

    return rundir.complete_checkpoints(run_dir)


@pytest.mark.slow
def test_preemption_with_a_grace_time_checkpoints_within_it_and_the_requeued_job_resumes(
    cluster: Cluster, tmp_path: Path, glyph_shards: Path
) -> None:
    """A job of the higher-tier partition `urgent` preempts the training job (PreemptMode=
    REQUEUE, GraceTime on `debug`): Slurm sends SIGTERM to every process of the job's step,
    SIGKILL after the grace, and requeues the job. A second TERM arrives while the ranks are on
    their way to the checkpoint. The ranks save at an agreed step well within the grace, the job
    ends by itself, and the requeued job resumes from that checkpoint to the end."""
    run_dir, log = tmp_path / "run", tmp_path / "job.out"
    overrides = tiny_overrides(
        run_dir, glyph_shards,
        **{"train.steps": STOP_RUN_STEPS, "train.checkpoint_every": 1000, "train.sample_every": 1000,
           "train.stop_check_every": STOP_CHECK_EVERY, "data.num_workers": 1,
           "tracking.wandb": False},
    )  # fmt: skip
    job = submit(
        cluster, "--cpus-per-task=2", f"--output={log}", "slurm/train.sbatch",
        "configs/dcgan.yaml", *overrides,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not read_metrics(run_dir):
        assert time.monotonic() < deadline, f"training never logged\n{log.read_text()[-6000:]}"
        assert not finished(cluster.jobs(job)), log.read_text()[-6000:]
        time.sleep(0.2)

    preempted_at = time.time()
    urgent = submit(
        cluster, "--partition=urgent", "--cpus-per-task=1", f"--output={tmp_path}/urgent.out",
        "--wrap", "sleep 1",
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while "SIGTERM received: checkpointing" not in log.read_text():
        assert time.monotonic() < deadline, f"no SIGTERM reached a rank\n{cluster.logs()}"
        time.sleep(0.05)
    # Slurm's second TERM comes at the grace's end; send one now, while the ranks train on to
    # their next agreed stop step (up to STOP_CHECK_EVERY steps away) and save.
    cluster.command("scancel", "--signal=TERM", job)

    (state,) = wait_for(
        cluster, job,
        lambda s: s[0]["JobState"] == "PENDING" and s[0]["Restarts"] == "1",
        "requeued after its preemption", log,
    )  # fmt: skip
    ended_in_s = time.time() - preempted_at
    assert ended_in_s < GRACE_TIME_S, f"the job was killed at the grace's end\n{cluster.logs()}"
    (stopped,) = rundir_checkpoints(run_dir)
    stop_step = int(stopped.name.removeprefix("step-"))
    assert 0 < stop_step < STOP_RUN_STEPS and stop_step % STOP_CHECK_EVERY == 0, log.read_text()[
        -6000:
    ]
    assert len(list(stopped.glob("rank-*.pt"))) == 2
    assert (stopped / "COMPLETE").stat().st_mtime - preempted_at < GRACE_TIME_S
    text = log.read_text()
    assert "already stopping" in text  # the second TERM was received, and only logged
    assert "killed by signal" not in text and "Traceback" not in text, text[-6000:]
    wait_for(cluster, urgent, finished, "finished (the preemptor)")

    # Skip the requeue delay, as in the USR1 test; the requeued job resumes and finishes.
    time.sleep(2)
    cluster.command("scontrol", "update", f"JobId={job}", "StartTime=now")
    (state,) = wait_for(cluster, job, finished, "finished after its requeue", log)
    assert state["JobState"] == "COMPLETED", log.read_text()[-6000:]
    assert json.loads((run_dir / "run.json").read_text())["resumed_at_step"] == stop_step
    assert [r["step"] for r in read_metrics(run_dir)] == list(range(2, STOP_RUN_STEPS + 1, 2))
    assert f"job {job} (restart 1)" in log.read_text()
