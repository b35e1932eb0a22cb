"""Two real gloo ranks on CPU, started the way users start them (torchrun and accelerate launch);
a lost rank named by the rank left; GPUs allocated but unusable refused."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests import wandb_log
from tests.conftest import gandist_cli, run, tiny_overrides

pytestmark = pytest.mark.dist

SCRIPT = Path(__file__).parent / "scripts" / "train_and_dump_ranks.py"


def test_torchrun_two_ranks_train_one_model_and_write_the_run(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir, dumps = tmp_path / "run", tmp_path / "dumps"
    dumps.mkdir()
    overrides = tiny_overrides(run_dir, glyph_shards, **{"data.num_workers": 2, "train.steps": 6})
    run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(SCRIPT), str(dumps), *overrides]
    )  # fmt: skip
    ranks = [torch.load(dumps / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert all(r["distributed_type"] == "DistributedType.MULTI_CPU" for r in ranks)
    for net in ("generator", "discriminator"):
        for name, tensor in ranks[0][net].items():
            if "running_" in name or "num_batches" in name:
                continue  # BN statistics are per rank by design; parameters must match exactly
            assert torch.equal(tensor, ranks[1][net][name]), f"{net}.{name} differs across ranks"

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert all(math.isfinite(r["train/d_loss"]) and math.isfinite(r["train/g_loss"]) for r in rows)
    assert rows[-1]["train/images_seen"] == 6 * 8
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2
    assert (run_dir / "samples" / "step-00000006.png").is_file()
    final = run_dir / "checkpoints" / "step-00000006"
    assert {"COMPLETE", "state.pt", "rank-00000.pt", "rank-00001.pt"} <= {
        p.name for p in final.iterdir()
    }
    assert wandb_log.run_file(run_dir).stat().st_size > 0


@pytest.mark.slow
def test_gandist_train_launches_two_ranks_and_resumes_them(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, glyph_shards, **{"data.num_workers": 2})
    gandist_cli("train", "configs/dcgan.yaml", "--num-processes", "2", *overrides)
    gandist_cli(
        "train",
        "configs/dcgan.yaml",
        "--num-processes",
        "2",
        *overrides,
        "train.steps=8",
        "resume=latest",
    )
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    assert rows[-1]["train/images_seen"] == 8 * 8
    info = json.loads((run_dir / "run.json").read_text())
    assert (info["world_size"], info["resumed_at_step"]) == (2, 4)
    # Both ranks' stream positions travel with the checkpoint, each in its rank's file.
    final = run_dir / "checkpoints" / "step-00000008"
    states = [torch.load(final / f"rank-{r:05d}.pt", weights_only=True) for r in (0, 1)]
    assert [state["data"]["position"][0] for state in states] == [8, 8]
    assert [state["data"]["rank"] for state in states] == [0, 1]


LOSE_A_RANK = Path(__file__).parent / "scripts" / "lose_a_rank.py"


@pytest.mark.parametrize(
    ("victim", "signal_name"),
    [
        (1, "SIGKILL"),
        pytest.param(0, "SIGKILL", marks=pytest.mark.slow),
        pytest.param(1, "SIGSTOP", marks=pytest.mark.slow),
    ],
)
def test_the_rank_left_names_the_lost_rank_within_the_timeout(
    tmp_path: Path, victim: int, signal_name: str
) -> None:
    """Two ranks started as separate launches (as on two nodes: no agent kills the survivor);
    one is killed mid-collective, or stopped so that only the process-group timeout ends the
    wait; the other exits with one line naming it, within the timeout."""
    timeout_s = 6
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = os.environ | {
            "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "PYTHONPATH": str(Path(__file__).parents[1]), "CUDA_VISIBLE_DEVICES": "",
        }  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, str(LOSE_A_RANK), str(tmp_path), str(timeout_s)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    lost, left = procs[victim], procs[1 - victim]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{r}").exists() for r in (0, 1)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [
                p.communicate()[1][-2000:] for p in procs if p.poll() is not None
            ]
            time.sleep(0.05)
        time.sleep(0.3)  # well into the all-reduce loop
        lost.send_signal(getattr(signal, signal_name))
        start = time.monotonic()
        _, err = left.communicate(timeout=timeout_s + 30)
        elapsed = time.monotonic() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    assert left.returncode == 3, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("gandist: error:")]
    assert len(lines) == 1 and f"lost rank {victim} of 2" in lines[0], err[-3000:]
    if signal_name == "SIGSTOP":  # nothing broke a connection: the timeout ended the wait
        assert timeout_s - 1 < elapsed < timeout_s + 10, elapsed
    else:
        assert elapsed < timeout_s, elapsed


@pytest.mark.slow
def test_a_training_rank_killed_mid_run_is_named_and_resume_continues_from_the_last_checkpoint(
    tmp_path: Path, glyph_shards: Path
) -> None:
    """`gandist.train` on two ranks started as separate launches (as on two nodes, where no
    agent kills the survivor): SIGKILL rank 1 mid-run; rank 0 exits 1 within
    train.dist_timeout_s with one line naming rank 1; resume=latest continues."""
    timeout_s = 20
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(
        run_dir, glyph_shards,
        **{"train.steps": 100_000, "train.checkpoint_every": 4, "train.sample_every": 100_000,
           "train.dist_timeout_s": timeout_s, "tracking.wandb": False},
    )  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = os.environ | {
            "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "PYTHONPATH": str(Path(__file__).parents[1]), "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": "1",
        }  # fmt: skip
        command = [sys.executable, "-m", "gandist.train", "configs/dcgan.yaml", *overrides]
        procs.append(
            subprocess.Popen(
                command,
                env=env,
                cwd=Path(__file__).parents[1],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    try:
        deadline = time.monotonic() + 180
        while len(list((run_dir / "checkpoints").glob("step-*/COMPLETE"))) < 2:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [
                p.communicate()[1][-3000:] for p in procs if p.poll() is not None
            ]
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGKILL)
        start = time.monotonic()
        _, err = procs[0].communicate(timeout=timeout_s + 60)
        elapsed = time.monotonic() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    assert procs[0].returncode == 1, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("gandist: error:")]
    assert len(lines) == 1 and "rank 0: lost rank 1 of 2" in lines[0], err[-3000:]
    assert elapsed < timeout_s + 10, elapsed
    from gandist import rundir

    last = rundir.latest_checkpoint(run_dir)
    last_step = int(last.name.removeprefix("step-"))
    resumed = tiny_overrides(
        run_dir, glyph_shards,
        **{"train.steps": last_step + 2, "tracking.wandb": False, "resume": "latest"},
    )  # fmt: skip
    gandist_cli("train", "configs/dcgan.yaml", "--num-processes", "1", *resumed)
    assert json.loads((run_dir / "run.json").read_text())["resumed_at_step"] == last_step
    assert rundir.latest_checkpoint(run_dir).name == f"step-{last_step + 2:08d}"


def test_allocated_gpus_without_usable_cuda_stop_with_torch_and_driver_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gandist import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a mismatched node
    for env in ({}, {"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": "-1"},
                {"SLURM_JOB_GPUS": "NoDevFiles"}, {"SLURM_GPUS_ON_NODE": "0"}):  # fmt: skip
        distributed.check_cuda_usable(env)  # no GPUs allocated: CPU ranks are fine
    # nvidia-smi as a driver 535 node prints it (a stand-in on PATH: this machine has no GPU).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho '| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   "
        "CUDA Version: 12.2     |'\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for env, named in (
        ({"CUDA_VISIBLE_DEVICES": "0"}, "CUDA_VISIBLE_DEVICES=0"),
        ({"SLURM_GPUS_PER_NODE": "a100:2"}, "SLURM_GPUS_PER_NODE=a100:2"),
        ({"SLURM_STEP_GPUS": "0,1"}, "SLURM_STEP_GPUS=0,1"),
    ):
        with pytest.raises(distributed.CudaUnavailableError) as err:
            distributed.check_cuda_usable(env)
        message = str(err.value)
        assert "\n" not in message and f"GPUs were allocated ({named})" in message
        assert f"torch {torch.__version__}" in message
        assert str(torch.version.cuda or "CPU-only") in message
        assert "driver 535.104.05 (supports CUDA 12.2)" in message
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(distributed.glob, "glob", lambda pattern: [])
    with pytest.raises(distributed.CudaUnavailableError, match="no nvidia-smi on PATH"):
        distributed.check_cuda_usable({"SLURM_STEP_GPUS": "0"})
    # A launcher sets CUDA_VISIBLE_DEVICES on CPU-only nodes too (accelerate's --gpu_ids): with
    # no NVIDIA hardware on the node it allocates nothing, and CPU ranks train.
    distributed.check_cuda_usable({"CUDA_VISIBLE_DEVICES": "0"})


def test_build_accelerator_refuses_a_node_whose_gpus_torch_cannot_use(tmp_path: Path) -> None:
    """The real check in a fresh process, where Slurm allocated a GPU torch cannot use."""

    if torch.cuda.is_available():
        pytest.skip("CUDA works here: nothing to refuse")
    code = "from gandist.distributed import build_accelerator; build_accelerator('fp32')"
    env = os.environ | {"SLURM_STEP_GPUS": "0", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "CudaUnavailableError: GPUs were allocated (SLURM_STEP_GPUS=0)" in done.stderr
