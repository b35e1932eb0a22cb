"""`gandist bench train`: Trainer images/s against the textbook PyTorch loop, side by side.

`--data memory` (default) feeds both loops the same few decoded batches from memory, so only
the training step is compared; `--data stream` has both read the config's shards, the plain
loop through a plain DataLoader over the same stream, the Trainer through its DataStream.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gandist.data.loader import build_loader
from gandist.registry import MODELS
from gandist.training.config import Config, load_config


def preload_batches(cfg: Config, num_batches: int) -> list[dict[str, Any]]:
    """Decode a few batches once, so both loops train on identical data with no reading cost."""
    loader = build_loader(
        cfg.data, batch_size=cfg.train.batch_size, rank=0, world_size=1, seed=cfg.train.seed
    )
    return [{"image": b["image"]} for b in itertools.islice(iter(loader), num_batches)]


def timed_run_overrides(overrides: list[str], steps: int, window: int) -> list[str]:
    """A benchmark's Trainer run: no wandb or bar, logs every `window` steps (its images/s are
    read back from metrics.jsonl), samples and checkpoints only at the end."""
    return [
        *overrides,
        "tracking.wandb=false",
        "train.progress_bar=false",
        f"train.steps={steps}",
        f"train.log_every={window}",
        f"train.sample_every={steps}",
        f"train.checkpoint_every={steps}",
    ]


def training_command(
    config: str, overrides: list[str], num_processes: int, out_dir: Path
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `gandist train --num-processes N` into `out_dir`,
    one thread a rank, wandb offline."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    command = [
        sys.executable, "-m", "gandist.cli", "train", config, *overrides,
        f"output_dir={out_dir}", "--num-processes", str(num_processes),
    ]  # fmt: skip
    return command, env


def train_in_subprocesses(
    config: str, overrides: list[str], num_processes: int, out_dir: Path
) -> None:
    """`gandist train --num-processes N` into `out_dir` (`training_command`); its figures are
    read back from out_dir's metrics.jsonl."""
    command, env = training_command(config, overrides, num_processes, out_dir)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")


def streamed_batches(cfg: Config) -> Iterator[dict[str, Any]]:
    """The config's shards as an endless iterator of batches, for the plain loop."""
    loader = build_loader(
        cfg.data, batch_size=cfg.train.batch_size, rank=0, world_size=1, seed=cfg.train.seed
    )
    while True:
        yield from loader


def plain_loop(
    cfg: Config,
    batches: Iterator[dict[str, Any]],
    steps: int,
    window: int,
    device: torch.device | None = None,
) -> list[float]:
    """The textbook GAN loop (D step with G under no_grad, G step through a frozen D, Adam), in
    fp32 on `device` (default: the CPU).

    Returns images/s for each window of `window` steps.
    """
    device = device or torch.device("cpu")
    torch.manual_seed(cfg.train.seed)
    generator, discriminator = (
        net.to(device)
        for net in MODELS.get(cfg.model.name)(cfg.model, cfg.data.resolution, cfg.data.channels)
    )
    betas = tuple(cfg.optim.betas)
    g_opt = torch.optim.Adam(generator.parameters(), lr=cfg.optim.g_lr, betas=betas)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=cfg.optim.d_lr, betas=betas)
    rates, start = [], time.perf_counter()
    for step, batch in zip(range(1, steps + 1), batches, strict=False):
        real = batch["image"].to(device)
        z = torch.randn(real.shape[0], cfg.model.latent_dim, device=device)
        with torch.no_grad():
            fake = generator(z)
        d_loss = F.softplus(-discriminator(real)).mean() + F.softplus(discriminator(fake)).mean()
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()

        discriminator.requires_grad_(False)
        g_loss = F.softplus(-discriminator(generator(z))).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        discriminator.requires_grad_(True)
        if step % window == 0:
            if device.type == "cuda":
                torch.cuda.synchronize()  # kernels run asynchronously: time finished work
            rates.append(window * real.shape[0] / (time.perf_counter() - start))
            start = time.perf_counter()
    return rates


def trainer_loop(cfg: Config, batches: list[dict[str, Any]] | None, out_dir: Path) -> list[float]:
    """images/s of the real Trainer for each log window, read back from its metrics.jsonl;
    it streams the config's shards itself when `batches` is None."""
    from accelerate.state import AcceleratorState

    from gandist.training.trainer import Trainer

    Trainer(cfg, batches=None if batches is None else itertools.cycle(batches)).train()
    AcceleratorState._reset_state(reset_partial_state=True)
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["perf/images_per_s"] for row in rows]


def bench_train(
    config: str, overrides: list[str], steps: int = 60, rounds: int = 3, data: str = "memory"
) -> dict:
    """Alternate rounds of both loops (so machine noise hits both alike) and print the ratio."""
    window = max(1, steps // 6)
    results: dict[str, list[float]] = {"plain": [], "trainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        common = timed_run_overrides(overrides, steps, window)
        base = load_config(config, [*common, f"output_dir={tmp}/data"])
        unpaired = base.train.algorithm == "cyclegan"
        if unpaired:  # two generators, two discriminators, a batch of each domain
            from gandist.bench.cyclegan import plain_cyclegan_loop, preload_unpaired

        preload = preload_unpaired if unpaired else preload_batches
        batches = preload(base, num_batches=8) if data == "memory" else None
        if unpaired and batches is None:
            raise ValueError("bench train --data stream times one shard set; cyclegan needs memory")
        plain_loop_of = plain_cyclegan_loop if unpaired else plain_loop
        print(
            f"gandist bench train: {base.model.name} at {base.data.resolution} px, global batch "
            f"{base.train.batch_size}, 1 process, {torch.get_num_threads()} threads, data from "
            f"{data} ({base.data.num_workers} workers when streamed), {steps} steps x {rounds} "
            "rounds (first window of each run is warm-up, dropped)"
        )
        for index in range(rounds):
            out_dir = Path(tmp) / f"trainer-{index}"
            cfg = load_config(config, [*common, f"output_dir={out_dir}"])
            if unpaired:
                plain = plain_loop_of(base, batches, steps, window)[1:]
            else:
                source = itertools.cycle(batches) if batches else streamed_batches(base)
                plain = plain_loop(base, source, steps, window)[1:]
            trainer = trainer_loop(cfg, batches, out_dir)[1:]
            results["plain"] += plain
            results["trainer"] += trainer
            print(
                f"  round {index + 1}: plain {statistics.median(plain):8.1f} img/s   "
                f"trainer {statistics.median(trainer):8.1f} img/s"
            )
    plain_rate = statistics.median(results["plain"])
    trainer_rate = statistics.median(results["trainer"])
    ratio = trainer_rate / plain_rate
    print(f"median: plain {plain_rate:.1f} img/s, trainer {trainer_rate:.1f} img/s")
    print(
        f"trainer / plain = {ratio:.3f} (goal >= 0.95): {'PASS' if ratio >= 0.95 else 'BELOW GOAL'}"
    )
    return {"plain_images_per_s": plain_rate, "trainer_images_per_s": trainer_rate, "ratio": ratio}
