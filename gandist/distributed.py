"""Building the Accelerator so ranks really form one group (on the devices they were given,
with a timeout), per-rank seeds, naming a lost rank, and cross-rank consistency checks."""

from __future__ import annotations

import contextlib
import datetime
import glob
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from accelerate import Accelerator, DistributedDataParallelKwargs, InitProcessGroupKwargs
from torch import nn

ACCELERATE_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def derive_seed(*parts: int) -> int:
    """A 32-bit seed that depends on every part (seed, rank, worker, epoch, ...), not their sum."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def resolve_mixed_precision(mixed_precision: str) -> str:
    """`auto` -> bf16 on a CUDA GPU that supports it (Ampere and newer), else fp32.

    bf16 has fp32's exponent range, so it needs no loss scaling; fp16 stays opt-in.
    """
    if mixed_precision != "auto":
        return mixed_precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


class NotDistributedError(RuntimeError):
    """Several processes were launched but they did not form one process group."""


def launched_world_size(env: Mapping[str, str] = os.environ) -> int:
    """How many processes the launcher (torchrun, accelerate launch, srun) started."""
    return int(env.get("WORLD_SIZE", "1"))


def check_distributed(num_processes: int, env: Mapping[str, str] = os.environ) -> None:
    """Fail loudly when a launcher started several processes that are training independently."""
    launched = launched_world_size(env)
    if launched > 1 and num_processes != launched:
        raise NotDistributedError(
            f"the launcher started {launched} processes (WORLD_SIZE={launched}) but this one sees "
            f"{num_processes}: the ranks would train independently. Without CUDA, ranks must use "
            "the CPU backend (gloo); gandist picks it when torch.cuda.is_available() is False."
        )


class CudaUnavailableError(RuntimeError):
    """GPUs were allocated to this process, but this torch build cannot use them."""


# Variables through which Slurm or a launcher says GPUs were given to this process: lists of
# device indices, and counts (`2`, or `a100:2` in Slurm's per-node form). Not LOCAL_WORLD_SIZE:
# gandist starts CPU ranks through accelerate's multi-GPU launch as well.
GPU_INDEX_VARIABLES = ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS")
GPU_COUNT_VARIABLES = (
    "SLURM_GPUS_ON_NODE",
    "SLURM_GPUS_PER_TASK",
    "SLURM_GPUS_PER_NODE",
    "SLURM_GPUS",
)


def node_has_nvidia_gpus() -> bool:
    """NVIDIA device files or the driver's nvidia-smi: the node's hardware, whatever torch sees."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def allocated_gpus(env: Mapping[str, str] = os.environ) -> str | None:
    """`NAME=value` of the first variable that allocates GPUs to this process, or None.

    An empty CUDA_VISIBLE_DEVICES, `-1` or `NoDevFiles` (Slurm without GPUs) allocates none.
    CUDA_VISIBLE_DEVICES alone counts only on a node with NVIDIA hardware: launchers such as
    `accelerate launch --gpu_ids` set it on CPU-only nodes too. Slurm's GPU variables always count.
    """
    for name in GPU_INDEX_VARIABLES:
        value = env.get(name, "").strip()
        if name == "CUDA_VISIBLE_DEVICES" and not node_has_nvidia_gpus():
            continue
        if value and value not in ("-1", "NoDevFiles", "none"):
            return f"{name}={value}"
    for name in GPU_COUNT_VARIABLES:
        value = env.get(name, "").strip()
        counts = [c.rsplit(":", 1)[-1] for c in value.split(",")]
        if any(c.isdigit() and int(c) > 0 for c in counts):
            return f"{name}={value}"
    return None


def driver_description() -> str:
    """The NVIDIA driver version and the CUDA version it supports, as nvidia-smi reports them."""
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi on PATH (is the NVIDIA driver installed on this node?)"
    try:
        out = subprocess.run(
            ["nvidia-smi"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return f"nvidia-smi failed ({err})"
    driver = re.search(r"Driver Version:\s*([\d.]+)", out)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", out)
    if not driver:
        return f"nvidia-smi gives no driver version ({out.strip().splitlines()[:1] or 'no output'})"
    return f"driver {driver.group(1)}" + (f" (supports CUDA {cuda.group(1)})" if cuda else "")


def check_cuda_usable(env: Mapping[str, str] = os.environ) -> None:
    """Raise CudaUnavailableError (one line) when GPUs were allocated but torch cannot use
    CUDA: otherwise every GPU's process would silently train on the CPU."""
    allocation = allocated_gpus(env)
    if allocation is None or torch.cuda.is_available():
        return
    build = (
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda}"
        if torch.version.cuda
        else f"torch {torch.__version__} is a CPU-only build"
    )
    raise CudaUnavailableError(
        f"GPUs were allocated ({allocation}) but torch cannot use CUDA: {build}, the node has "
        f"{driver_description()}; install a torch build for this driver (or run without GPUs)"
    )


DEFAULT_TIMEOUT_S = 300.0


def build_accelerator(
    mixed_precision: str, log_with: list | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Accelerator:
    """An Accelerator on every local device: GPUs with NCCL, or CPU ranks over gloo.

    Without `cpu=True` a CPU-only process started by torchrun silently becomes a
    single-process run (DistributedType.NO), so two ranks would train two unrelated models.
    A collective that waits `timeout_s` for a rank that is stuck or gone raises on the ranks
    left (instead of gloo's 30 minutes); `watch_ranks` then names the rank.
    """
    if timeout_s <= 0:
        raise ValueError(f"the process-group timeout must be > 0 seconds, got {timeout_s}")
    check_cuda_usable()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=ACCELERATE_PRECISION[resolve_mixed_precision(mixed_precision)],
        log_with=log_with,
        kwargs_handlers=[
            # Every D and G parameter gets a gradient in its own phase; the G phase runs D's
            # unwrapped module, so DDP never waits for gradients that a frozen D won't produce.
            # Gradients are views into DDP's all-reduce buckets: no copy in, and one gradient
            # buffer's memory instead of two.
            DistributedDataParallelKwargs(
                find_unused_parameters=False, gradient_as_bucket_view=True
            ),
            InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=timeout_s)),
        ],
    )
    check_distributed(accelerator.num_processes)
    return accelerator


# ---- naming a lost rank ------------------------------------------------------------------

HEARTBEAT_S = 1.0
HEARTBEAT_KEY = "gandist/heartbeat/{rank}"


class RankLostError(RuntimeError):
    """A collective failed because another rank died or stopped answering."""


class Heartbeat:
    """Each rank writes the time into the process group's store every HEARTBEAT_S from a
    daemon thread, so the ranks left after a failed collective can tell which rank went
    silent. (gloo and NCCL errors name a peer's address at best, not its rank.)"""

    def __init__(self, store: dist.Store, rank: int, world: int) -> None:
        self.store, self.rank, self.world = store, rank, world
        self.stop = threading.Event()
        self.beat()
        self.thread = threading.Thread(target=self.run, name="gandist-heartbeat", daemon=True)
        self.thread.start()

    def beat(self) -> None:
        self.store.set(HEARTBEAT_KEY.format(rank=self.rank), repr(time.time()))

    def run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - the store is gone; lost_ranks says so
                return

    def lost_ranks(self, wait_s: float = 4 * HEARTBEAT_S) -> tuple[list[int], str]:
        """Ranks whose heartbeat is older than 3 beats (waiting up to `wait_s` for one to
        age, since a rank that just died beat a moment ago), and how that was found."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                ages = {}
                for rank in range(self.world):
                    if rank == self.rank:
                        continue
                    beat = float(self.store.get(HEARTBEAT_KEY.format(rank=rank)))
                    ages[rank] = time.time() - beat
            except Exception:  # noqa: BLE001 - the store's host (rank 0's launcher) is gone
                return [0], "the process-group store (hosted with rank 0) no longer answers"
            lost = sorted(r for r, age in ages.items() if age > 3 * HEARTBEAT_S)
            if lost or time.monotonic() > deadline:
                return lost, ", ".join(f"rank {r}: no heartbeat for {ages[r]:.0f} s" for r in lost)
            time.sleep(HEARTBEAT_S / 2)

    def close(self) -> None:
        self.stop.set()


@contextlib.contextmanager
def watch_ranks(rank: int | None = None, world: int | None = None) -> Iterator[None]:
    """Turn a collective's failure into RankLostError naming the rank(s) that went silent.

    Wrap everything that runs collectives (the training loop). A no-op outside a process
    group of two or more ranks; an error with no silent rank behind it passes unchanged.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        yield
        return
    rank = dist.get_rank() if rank is None else rank
    world = dist.get_world_size() if world is None else world
    heartbeat = Heartbeat(dist.distributed_c10d._get_default_store(), rank, world)
    try:
        yield
    except (RuntimeError, OSError) as err:
        if isinstance(err, RankLostError):
            raise
        lost, how = heartbeat.lost_ranks()
        if not lost:
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        names = ", ".join(map(str, lost))
        raise RankLostError(
            f"rank {rank}: lost rank {names} of {world} ({how}); stopping this rank after "
            f"{type(err).__name__}: {first}"
        ) from err
    finally:
        heartbeat.close()


def parameter_fingerprint(module: nn.Module) -> torch.Tensor:
    """Per-tensor (sum, abs-sum, position-weighted sum) in float64: [num_params, 3]."""
    rows = []
    for p in module.parameters():
        flat = p.detach().double().flatten()
        weights = torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64, device=flat.device)
        rows.append(torch.stack([flat.sum(), flat.abs().sum(), (flat * weights).sum()]))
    return torch.stack(rows)


def assert_ranks_in_sync(accelerator: Accelerator, modules: Mapping[str, nn.Module]) -> None:
    """Raise if any rank's parameters differ from rank 0's (DDP should keep them bit-identical)."""
    if accelerator.num_processes == 1:
        return
    for name, module in modules.items():
        local = parameter_fingerprint(accelerator.unwrap_model(module, keep_torch_compile=False))
        gathered = accelerator.gather(local[None])  # [world, num_params, 3]
        if not torch.equal(gathered, gathered[:1].expand_as(gathered)):
            bad = [r for r in range(gathered.shape[0]) if not torch.equal(gathered[r], gathered[0])]
            raise RuntimeError(f"{name} parameters differ from rank 0 on ranks {bad}")
