"""Building the Accelerator so ranks really form one group, per-rank seeds, and cross-rank consistency checks."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
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


def build_accelerator(mixed_precision: str, log_with: list | None = None) -> Accelerator:
    """An Accelerator on every local device: GPUs with NCCL, or CPU ranks over gloo.

    Without `cpu=True` a CPU-only process started by torchrun silently becomes a
    single-process run (DistributedType.NO), so two ranks would train two unrelated models.
    """
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=ACCELERATE_PRECISION[resolve_mixed_precision(mixed_precision)],
        log_with=log_with,
        # Every D and G parameter gets a gradient in its own phase; the G phase runs D's
        # unwrapped module, so DDP never waits for gradients that a frozen D won't produce.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
    )
    check_distributed(accelerator.num_processes)
    return accelerator


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
        local = parameter_fingerprint(accelerator.unwrap_model(module))
        gathered = accelerator.gather(local[None])  # [world, num_params, 3]
        if not torch.equal(gathered, gathered[:1].expand_as(gathered)):
            bad = [r for r in range(gathered.shape[0]) if not torch.equal(gathered[r], gathered[0])]
            raise RuntimeError(f"{name} parameters differ from rank 0 on ranks {bad}")
