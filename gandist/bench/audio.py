"""`gandist bench audio`: seconds of audio WaveGAN generates per second of training, the Trainer
on N ranks streaming shards against the same model in a plain single-process loop, in one run.

Generated audio counts every clip G makes in a step: one batch per critic step and one for the
G step, (n_critic + 1) x the global batch, each data.length / data.sample_rate seconds long.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gandist.bench.train import timed_run_overrides, train_in_subprocesses
from gandist.data.loader import build_loader
from gandist.losses import gradient_penalty, interpolate
from gandist.registry import MODELS
from gandist.rundir import read_metrics
from gandist.training.config import Config, load_config


def preload_clips(cfg: Config, num_batches: int) -> list[torch.Tensor]:
    """A few real batches [B, 1, L], decoded once, so the plain loop pays no reading cost."""
    loader = build_loader(
        cfg.data, batch_size=cfg.train.batch_size, rank=0, world_size=1, seed=cfg.train.seed
    )
    return [batch["audio"] for batch in itertools.islice(iter(loader), num_batches)]


def plain_loop(cfg: Config, batches: list[torch.Tensor], steps: int, window: int) -> list[float]:
    """The textbook WGAN-GP loop: n_critic critic steps (G under no_grad, gradient penalty on
    interpolates), then one G step through a frozen D; Adam. Generated clips/s per window."""
    torch.manual_seed(cfg.train.seed)
    generator, discriminator = MODELS.get(cfg.model.name)(
        cfg.model, cfg.data.resolution, cfg.data.channels
    )
    betas = tuple(cfg.optim.betas)
    g_opt = torch.optim.Adam(generator.parameters(), lr=cfg.optim.g_lr, betas=betas)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=cfg.optim.d_lr, betas=betas)
    n_critic, gp_weight = cfg.train.n_critic, cfg.reg.gp_weight
    real_batches = itertools.cycle(batches)
    rates, start, made = [], time.perf_counter(), 0
    for step in range(1, steps + 1):
        for _ in range(n_critic):
            real = next(real_batches)
            z = torch.randn(real.shape[0], cfg.model.latent_dim)
            with torch.no_grad():
                fake = generator(z)
            d_loss = discriminator(fake).mean() - discriminator(real).mean()
            points = interpolate(real, fake)
            penalty, _ = gradient_penalty(points, discriminator(points))
            d_opt.zero_grad(set_to_none=True)
            (d_loss + gp_weight * penalty).backward()
            d_opt.step()
            made += real.shape[0]
        discriminator.requires_grad_(False)
        g_loss = -discriminator(generator(torch.randn(real.shape[0], cfg.model.latent_dim))).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        discriminator.requires_grad_(True)
        made += real.shape[0]
        if step % window == 0:
            rates.append(made / (time.perf_counter() - start))
            start, made = time.perf_counter(), 0
    return rates


def trainer_ranks(
    config: str, overrides: list[str], num_processes: int, out_dir: Path
) -> list[float]:
    """Generated clips/s of `gandist train --num-processes N` per log window (1 thread a rank)."""
    train_in_subprocesses(config, overrides, num_processes, out_dir)
    cfg = load_config(out_dir / "config.yaml")
    per_real = (cfg.train.n_critic + 1) / cfg.train.n_critic  # images_per_s counts real clips
    return [row["perf/images_per_s"] * per_real for row in read_metrics(out_dir)]


def bench_audio(
    config: str,
    overrides: list[str],
    steps: int = 30,
    rounds: int = 2,
    ranks: int = 2,
    plain_threads: int | None = None,
) -> dict[str, Any]:
    """Alternate rounds of both (so machine noise hits both alike) and print audio s per s.

    The plain loop uses torch's default threads (one per core) unless `plain_threads` is set;
    each rank of the Trainer uses one.
    """
    if plain_threads:
        torch.set_num_threads(plain_threads)
    window = max(1, steps // 5)
    common = timed_run_overrides(overrides, steps, window)
    with tempfile.TemporaryDirectory() as tmp:
        base = load_config(config, [*common, f"output_dir={tmp}/plain"])
        seconds = base.data.length / base.data.sample_rate
        batches = preload_clips(base, num_batches=4)
        print(
            f"gandist bench audio: {base.model.name}, {base.data.length} samples at "
            f"{base.data.sample_rate} Hz ({seconds:.2f} s clips), global batch "
            f"{base.train.batch_size}, n_critic {base.train.n_critic}; plain loop: 1 process, "
            f"{torch.get_num_threads()} threads, preloaded batches; trainer: {ranks} ranks x 1 "
            f"thread streaming the shards; {steps} steps x {rounds} rounds (first window dropped)",
            flush=True,
        )
        results: dict[str, list[float]] = {"plain": [], "trainer": []}
        for index in range(rounds):
            plain = plain_loop(base, batches, steps, window)[1:]
            trainer = trainer_ranks(config, common, ranks, Path(tmp) / f"trainer-{index}")[1:]
            results["plain"] += plain
            results["trainer"] += trainer
            print(
                f"  round {index + 1}: plain {statistics.median(plain) * seconds:7.2f} s/s   "
                f"trainer x{ranks} {statistics.median(trainer) * seconds:7.2f} s/s",
                flush=True,
            )
    plain_rate = statistics.median(results["plain"]) * seconds
    trainer_rate = statistics.median(results["trainer"]) * seconds
    print(
        f"median seconds of generated audio per second of training: plain {plain_rate:.2f}, "
        f"trainer on {ranks} ranks {trainer_rate:.2f} (ratio {trainer_rate / plain_rate:.2f})"
    )
    return {"plain_audio_s_per_s": plain_rate, "trainer_audio_s_per_s": trainer_rate}
