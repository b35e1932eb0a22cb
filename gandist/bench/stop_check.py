"""`python -m gandist.bench.stop_check`: what the ranks' stop-request all-reduce costs per step.

Trains the configured GAN on 2 ranks (or under any launcher) and times the same D+G steps
with the stop check never, every `train.stop_check_every`-like interval, and every step, in
alternating rounds; prints ms/step side by side and the overhead as a ratio.

    python -m gandist.bench.stop_check [CONFIG] [key=value ...] [--steps 100 --rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from gandist.preemption import StopRequest
from gandist.training.config import load_config

INTERVALS = {"never": 0, "every 10 steps": 10, "every step": 1}


def _time_steps(trainer, steps: int, every: int, stop: StopRequest) -> float:
    """Seconds per step of `steps` D+G steps, with the stop check every `every` steps (0: never)."""
    trainer.accelerator.wait_for_everyone()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        trainer.train_step()
        if every and step % every == 0:
            assert not stop.agreed(trainer.accelerator)
    if trainer.accelerator.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def bench(config: str | None, overrides: list[str], steps: int, rounds: int) -> None:
    from gandist.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config, [*overrides, f"output_dir={tmp}/run", "tracking.wandb=false"])
        per_rank = cfg.train.batch_size // int(os.environ.get("WORLD_SIZE", "1"))
        shape = (per_rank, cfg.data.channels, cfg.data.resolution, cfg.data.resolution)
        trainer = Trainer(cfg, batches=itertools.repeat({"image": torch.rand(shape) * 2 - 1}))
        stop = StopRequest()  # nothing asks: this measures the check alone
        _time_steps(trainer, 5, 1, stop)  # warm-up
        per_step: dict[str, list[float]] = {name: [] for name in INTERVALS}
        for _ in range(rounds):
            for name, every in INTERVALS.items():
                per_step[name].append(_time_steps(trainer, steps, every, stop))
        checks = 200
        trainer.accelerator.wait_for_everyone()
        start = time.perf_counter()
        for _ in range(checks):
            stop.agreed(trainer.accelerator)
        check_s = (time.perf_counter() - start) / checks
        if trainer.is_main:
            base = statistics.median(per_step["never"])
            print(
                f"stop check: {trainer.accelerator.num_processes} ranks, "
                f"{trainer.accelerator.distributed_type}, {cfg.model.name} "
                f"g_width={cfg.model.g_width} batch {cfg.train.batch_size}, "
                f"{steps} steps x {rounds} rounds (median)"
            )
            for name in INTERVALS:
                ms = statistics.median(per_step[name]) * 1e3
                print(f"  check {name:<15} {ms:8.2f} ms/step   x{ms / (base * 1e3):.3f} of never")
            print(f"  one check alone  {check_s * 1e6:8.1f} us (all-reduce of one flag)")
        trainer.accelerator.end_training()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gandist.bench.stop_check")
    parser.add_argument("config", nargs="?", default="configs/dcgan.yaml")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=100, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-processes", type=int, default=2, help="ranks to start (gloo on CPU)")
    args = parser.parse_args(argv)
    if "WORLD_SIZE" not in os.environ and args.num_processes > 1:
        from gandist.cli import _free_port

        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
            str(args.num_processes), "--master_port", str(_free_port()),
            "-m", "gandist.bench.stop_check", *(argv if argv is not None else sys.argv[1:]),
        ]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        return subprocess.call(command, env=env)
    bench(args.config, args.overrides, args.steps, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
