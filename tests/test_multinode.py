"""Two nodes on one machine: launch/node.sh (the per-node command slurm/train.sbatch runs) started
as machine ranks 0 and 1 with 2 gloo ranks each forms one 4-rank run, which saves, resumes as one
run, stops on the stop file, and survives a TERM to every process of both nodes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gandist import checkpoint, rundir
from tests.conftest import ROOT, subprocess_env, tiny_overrides

pytestmark = [pytest.mark.dist, pytest.mark.slow]  # four 2-node launches: 2-6 minutes on 2 cores

NODES, PER_NODE = 2, 2
WORLD = NODES * PER_NODE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_nodes(
    run_dir: Path, shards: Path, logs: Path, stop_file: Path | None = None, **extra: object
) -> list[subprocess.Popen]:
    """Both node launches of one job, each the leader of its own process group (as Slurm starts
    one task per node), meeting at machine rank 0's port on this machine. `stop_file` is seen
    by node 0 alone, as the batch script's node-local stop file."""
    overrides = tiny_overrides(
        run_dir, shards,
        **{"tracking.wandb": False, "model.g_width": 16, "model.d_width": 16,
           "train.sample_every": 1000, **extra},
    )  # fmt: skip
    port = str(free_port())
    nodes = []
    for machine_rank in range(NODES):
        env = subprocess_env() | {
            "GANDIST_NODES": str(NODES),
            "GANDIST_PROCS_PER_NODE": str(PER_NODE),
            "GANDIST_MACHINE_RANK": str(machine_rank),
            "GANDIST_MAIN_ADDR": "127.0.0.1",
            "GANDIST_MAIN_PORT": port,
            "GANDIST_PYTHON": sys.executable,
        }
        env.pop("SLURM_GPUS_ON_NODE", None)
        env.pop("GANDIST_STOP_FILE", None)
        if stop_file is not None and machine_rank == 0:
            env["GANDIST_STOP_FILE"] = str(stop_file)
        with (logs / f"node{machine_rank}.log").open("a") as out:
            nodes.append(
                subprocess.Popen(
                    ["bash", "launch/node.sh", "configs/mlp.yaml", *overrides],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )  # fmt: skip
            )
    return nodes


def log_text(logs: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(logs.glob("node*.log"))
    )


def wait_all(nodes: list[subprocess.Popen], logs: Path, timeout_s: float = 240) -> None:
    try:
        codes = [node.wait(timeout=timeout_s) for node in nodes]
    finally:
        kill_all(nodes)
    assert codes == [0] * NODES, log_text(logs)


def kill_all(nodes: list[subprocess.Popen]) -> None:
    for node in nodes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)


def logged_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def rank_states(run_dir: Path, step: int) -> list[dict]:
    """Every rank's own checkpoint file at `step`, in rank order."""
    folder = rundir.checkpoint_dir(run_dir, step)
    files = sorted(folder.glob("rank-*.pt"))
    assert [f.name for f in files] == [checkpoint.rank_file(r) for r in range(WORLD)]
    return [torch.load(f, weights_only=True) for f in files]


def shared_world_size(run_dir: Path, step: int) -> int:
    folder = rundir.checkpoint_dir(run_dir, step)
    return torch.load(folder / checkpoint.SHARED_FILE, weights_only=True)["format"]["world_size"]


def assert_positions(run_dir: Path, step: int) -> None:
    """Each of the 4 ranks saved its own stream, one batch drawn per step since step 0."""
    for rank, state in enumerate(rank_states(run_dir, step)):
        data = state["data"]
        assert (data["rank"], data["world_size"]) == (rank, WORLD)
        assert data["position"][0] == step, (rank, data["position"])


def wait_for_step(run_dir: Path, step: int, nodes: list[subprocess.Popen], logs: Path) -> None:
    deadline = time.monotonic() + 240
    while not logged_steps(run_dir) or logged_steps(run_dir)[-1] < step:
        assert all(n.poll() is None for n in nodes), log_text(logs)
        assert time.monotonic() < deadline, log_text(logs)
        time.sleep(0.1)


def latest_step(run_dir: Path) -> int:
    return int(rundir.latest_checkpoint(run_dir).name.removeprefix("step-"))


LONG = {"resume": "latest", "train.steps": 400, "train.checkpoint_every": 1000,
        "train.stop_check_every": 2}  # fmt: skip


def test_two_node_launches_form_one_four_rank_run_that_resumes_and_survives_preemption(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    logs = tmp_path / "logs"
    logs.mkdir()

    # 1. Both nodes train 4 steps as one 4-rank group and save at steps 2 and 4.
    wait_all(start_nodes(run_dir, glyph_shards, logs), logs)
    info = json.loads((run_dir / "run.json").read_text())
    assert (info["world_size"], info["batch_per_rank"]) == (WORLD, 2)
    assert info["distributed_type"] == "DistributedType.MULTI_CPU"
    assert logged_steps(run_dir) == [2, 4]  # written once, by rank 0 alone
    assert shared_world_size(run_dir, 4) == WORLD
    assert_positions(run_dir, 4)

    # 2. The same job again (resume=latest) continues at step 4 in the same 4-rank world, until
    # the batch script's trap (USR1 before the time limit) writes the stop file on the first
    # node (node-local: only node 0's ranks see it): every rank saves, both nodes exit 0.
    stop_file = tmp_path / "stop"
    nodes = start_nodes(run_dir, glyph_shards, logs, stop_file=stop_file, **LONG)
    try:
        wait_for_step(run_dir, 8, nodes, logs)
        stop_file.write_text("requested by USR1\n")
        wait_all(nodes, logs)
    finally:
        kill_all(nodes)
    text = log_text(logs)
    assert "resumed from" in text and "at step 4" in text and "Traceback" not in text, text
    first_stop = latest_step(run_dir)
    assert 8 <= first_stop < 400 and first_stop % 2 == 0
    assert stop_file.read_text().splitlines()[-1] == f"stopped at step {first_stop}"
    assert shared_world_size(run_dir, first_stop) == WORLD
    # Positions continue from the resumed ones (a fresh stream would stand 4 batches behind).
    assert_positions(run_dir, first_stop)
    assert logged_steps(run_dir) == list(range(2, first_stop + 1, 2))

    # 3. Preemption or scancel: TERM to every process of both nodes' tasks, as Slurm signals
    # every process of the step. The ranks agree on a step and save before anything is killed;
    # the agents end as torchrun's do on a TERM (its SignalException, exit 1) once their ranks
    # have exited by themselves, never through their 30 s SIGKILL.
    for log in logs.glob("*.log"):
        log.unlink()
    nodes = start_nodes(run_dir, glyph_shards, logs, **LONG)
    try:
        wait_for_step(run_dir, first_stop + 4, nodes, logs)
        for node in nodes:
            os.killpg(node.pid, signal.SIGTERM)
        codes = [node.wait(timeout=120) for node in nodes]
    finally:
        kill_all(nodes)
    text = log_text(logs)
    assert codes == [1, 1] and text.count("got signal: 15") == NODES, text
    assert "forcefully exiting" not in text and "stopped at step" in text, text
    second_stop = latest_step(run_dir)
    assert first_stop + 4 <= second_stop < 400 and second_stop % 2 == 0
    assert shared_world_size(run_dir, second_stop) == WORLD
    assert_positions(run_dir, second_stop)

    # 4. The relaunched job resumes from the preemption's checkpoint and finishes.
    wait_all(
        start_nodes(
            run_dir,
            glyph_shards,
            logs,
            **{"resume": "latest", "train.steps": second_stop + 2, "train.checkpoint_every": 1000},
        ),  # fmt: skip
        logs,
    )
    assert f"at step {second_stop}" in log_text(logs)
    assert logged_steps(run_dir) == list(range(2, second_stop + 3, 2))
    assert shared_world_size(run_dir, second_stop + 2) == WORLD
    assert_positions(run_dir, second_stop + 2)
