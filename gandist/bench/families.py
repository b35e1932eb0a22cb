"""Benchmark: training images/s of every GAN family at its default config on N local ranks.

`gandist bench families [CONFIG ...] --steps 3` launches N ranks (2 gloo ranks on a CPU
machine) once, trains each config a few steps on in-memory batches (so only the training step
is timed, not shard decoding) and prints one table from rank 0. Every family is scored the same
way, from what its algorithm says one step consumes: CycleGAN's batches hold a batch of each
domain, so its real images count both domains and its G images both directions.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

DEFAULT_CONFIGS = [
    "configs/mlp.yaml",
    "configs/dcgan.yaml",
    "configs/dcgan64.yaml",
    "configs/conditional.yaml",
    "configs/wgan.yaml",
    "configs/wgan-gp.yaml",
    "configs/sngan.yaml",
    "configs/biggan.yaml",
    "configs/stylegan2.yaml",
    "configs/cyclegan.yaml",
]


def _batches(
    batch_size: int, channels: int, resolution: int, num_classes: int, unpaired: bool = False
) -> Iterator[dict]:
    """An endless stream of random batches shaped like the shard stream's (with `unpaired`,
    like UnpairedStream's: {"a": batch of domain A, "b": batch of domain B})."""

    def one_batch() -> dict[str, torch.Tensor]:
        images = torch.rand(batch_size, channels, resolution, resolution) * 2 - 1
        return {"image": images, "label": torch.randint(0, max(1, num_classes), (batch_size,))}

    batch = {"a": one_batch(), "b": one_batch()} if unpaired else one_batch()
    while True:
        yield batch


def _bench_one(
    path: str, overrides: list[str], steps: int, warmup: int, out: Path
) -> dict[str, Any]:
    from accelerate.state import AcceleratorState

    from gandist.training.config import load_config
    from gandist.training.trainer import Trainer

    name = Path(path).stem
    cfg = load_config(
        path,
        [
            f"output_dir={out / name}",
            "tracking.wandb=false",
            "train.progress_bar=false",
            *overrides,
        ],
    )
    AcceleratorState._reset_state()  # each config builds its own Accelerator in this process
    world = int(os.environ.get("WORLD_SIZE", "1"))  # the process group starts in Trainer
    per_rank = cfg.train.batch_size // world
    unpaired = cfg.train.algorithm == "cyclegan"
    data = _batches(
        per_rank, cfg.data.channels, cfg.data.resolution, cfg.model.num_classes, unpaired
    )
    trainer = Trainer(cfg, batches=data)
    # What one step consumes, as the algorithm counts it (perf/images_per_s): real samples over
    # all ranks (n_critic batches for adversarial, a batch of each domain for CycleGAN), and
    # as many fakes per D phase as one phase sees real images.
    real_per_step = trainer.algorithm.images_per_step
    d_phases = sum(phase.name == "d" for phase in trainer.algorithm.phases(0))
    for _ in range(warmup):
        trainer.train_step()
    trainer.accelerator.wait_for_everyone()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    trainer.accelerator.wait_for_everyone()
    elapsed = time.perf_counter() - start
    global_batch = per_rank * trainer.accelerator.num_processes
    return {
        "config": name,
        "model": cfg.model.name,
        "batch": global_batch,
        "n_critic": d_phases,
        "step_s": elapsed / steps,
        "g_images_per_s": steps * real_per_step / d_phases / elapsed,
        "d_images_per_s": steps * real_per_step / elapsed,
        "precision": trainer.precision,
        "ranks": trainer.accelerator.num_processes,
    }


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--overrides", nargs="*", default=[])
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.configs:
            rows.append(_bench_one(path, args.overrides, args.steps, args.warmup, Path(tmp)))
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        print(format_table(rows), flush=True)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def format_table(rows: list[dict[str, Any]]) -> str:
    device = "GPU" if torch.cuda.is_available() else "CPU"
    lines = [
        f"training throughput, {rows[0]['ranks']} {device} ranks, in-memory batches, default configs",
        f"{'config':<12} {'model':<12} {'precision':<9} {'batch':>5} {'n_critic':>8} "
        f"{'s/step':>8} {'G img/s':>9} {'D real img/s':>13}",
    ]
    for r in rows:
        lines.append(
            f"{r['config']:<12} {r['model']:<12} {r['precision']:<9} {r['batch']:>5} "
            f"{r['n_critic']:>8} {r['step_s']:>8.3f} {r['g_images_per_s']:>9.1f} "
            f"{r['d_images_per_s']:>13.1f}"
        )
    if any(r["model"] == "cyclegan" for r in rows):
        lines.append("cyclegan: batch per domain; images of both domains (A->B and B->A)")
    return "\n".join(lines)


def bench_families(
    configs: list[str], overrides: list[str], steps: int, warmup: int, num_processes: int
) -> int:
    """Launch `num_processes` ranks with torchrun and print the table; returns the exit code."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node", str(num_processes),
        "-m", "gandist.bench.families",
        "--steps", str(steps), "--warmup", str(warmup),
        "--configs", *(configs or DEFAULT_CONFIGS),
    ]  # fmt: skip
    if overrides:
        command += ["--overrides", *overrides]
    return subprocess.call(command)


if __name__ == "__main__":
    worker(sys.argv[1:])
