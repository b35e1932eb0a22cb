"""Run by torchrun with 2 ranks: a CycleGAN run stopped at step 3 and resumed equals an
uninterrupted one, both data streams and both image pools included.

Usage: torchrun --nproc_per_node 2 tests/scripts/cyclegan_resume_two_ranks.py SHARDS_A SHARDS_B OUT
Each rank writes OUT/report-<rank>.json listing every value that differs between its snapshot
of the uninterrupted run and of the stopped-and-resumed run (weights, Adam moments, pools, RNGs,
both stream positions), and the ranks' pool sizes and stream positions.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from accelerate.state import AcceleratorState
from bitexact import differences, trainer_state  # a sibling: torchrun puts this folder on sys.path

from gandist.training.algorithm import Phase
from gandist.training.config import load_config
from gandist.training.trainer import Trainer

STEPS, STOP_AT = 6, 3


def build(shards_a: Path, shards_b: Path, run_dir: Path, **extra: object) -> Trainer:
    values = {
        "output_dir": run_dir, "data.shards": shards_a, "data.shards_b": shards_b,
        "data.num_workers": 2, "data.shuffle_buffer": 16, "model.name": "cyclegan",
        "model.g_width": 4, "model.d_width": 4, "model.res_blocks": 1,
        "train.algorithm": "cyclegan", "train.steps": STEPS, "train.batch_size": 4,
        "train.log_every": 2, "train.sample_every": 100, "train.checkpoint_every": 100,
        "train.stop_check_every": 1, "train.progress_bar": False, "train.num_samples": 2,
        # A pool smaller than the images a rank sees, so it fills and swaps before the stop.
        "cycle.pool_size": 3, "optim.lr_schedule": "linear", "optim.decay_after_steps": 2,
        "tracking.wandb": False,
        **extra,
    }  # fmt: skip
    AcceleratorState._reset_state()
    trainer = Trainer(load_config(None, [f"{k}={v}" for k, v in values.items()]))
    # end_training() would destroy the process group the next Trainer needs.
    trainer.accelerator.end_training = lambda: None
    return trainer


def snapshot(trainer: Trainer) -> dict[str, object]:
    algorithm = trainer.algorithm
    return {
        **{name: algorithm.local(name).state_dict() for name in algorithm.networks},
        "pools": {name: pool.images for name, pool in algorithm.pools.items()},
        "data_a": trainer.data.state_dict()["a"]["position"],
        "data_b": trainer.data.state_dict()["b"]["position"],
        **trainer_state(trainer),
    }


def main() -> None:
    shards_a, shards_b, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    straight = build(shards_a, shards_b, out / "straight")
    straight.train()
    expected = snapshot(straight)

    stop_file = out / "stop"
    os.environ["GANDIST_STOP_FILE"] = str(stop_file)
    first = build(shards_a, shards_b, out / "stopped")
    run_phase = first.run_phase

    def phase_then_ask_to_stop(phase: Phase) -> dict[str, torch.Tensor]:
        if first.progress.step == STOP_AT - 1 and first.accelerator.is_main_process:
            stop_file.write_text("stop\n")
        return run_phase(phase)

    first.run_phase = phase_then_ask_to_stop
    stopped_at = first.train().step
    first.accelerator.wait_for_everyone()
    del os.environ["GANDIST_STOP_FILE"]

    resumed = build(shards_a, shards_b, out / "stopped", resume="latest")
    resumed_to = resumed.train().step
    rank = resumed.accelerator.process_index
    report = {
        "stopped_at": stopped_at,
        "resumed_to": resumed_to,
        "differences": differences(snapshot(resumed), expected),
        "pool_sizes": [len(pool) for pool in resumed.algorithm.pools.values()],
        "batches_a": resumed.data.a.position.batches,
        "batches_b": resumed.data.b.position.batches,
        "pool_d_a": resumed.algorithm.pools["d_a"].images.flatten()[:8].tolist(),
    }
    (out / f"report-{rank}.json").write_text(json.dumps(report, indent=2))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
