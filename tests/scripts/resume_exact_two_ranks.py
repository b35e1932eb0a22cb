"""Run by torchrun with 2 ranks: a run stopped at step 3 and resumed equals an uninterrupted one.

Usage: torchrun --nproc_per_node 2 tests/scripts/resume_exact_two_ranks.py SHARDS OUT
Each rank writes OUT/report-<rank>.json listing every value that differs between its snapshot
of the uninterrupted run and of the stopped-and-resumed run (weights, Adam moments, RNGs, data).
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


def build(shards: Path, run_dir: Path, **extra: object) -> Trainer:
    values = {
        "output_dir": run_dir, "data.shards": shards, "data.num_workers": 2,
        "data.shuffle_buffer": 16, "model.latent_dim": 16, "model.g_width": 8, "model.d_width": 8,
        "train.steps": STEPS, "train.batch_size": 8, "train.log_every": 2,
        "train.sample_every": 100, "train.checkpoint_every": 100, "train.stop_check_every": 1,
        "train.progress_bar": False, "train.ema_half_life_images": 64, "tracking.wandb": False,
        **extra,
    }  # fmt: skip
    AcceleratorState._reset_state()
    trainer = Trainer(load_config(None, [f"{k}={v}" for k, v in values.items()]))
    # end_training() would destroy the process group the next Trainer needs.
    trainer.accelerator.end_training = lambda: None
    return trainer


def snapshot(trainer: Trainer) -> dict[str, object]:
    local = trainer.algorithm.local
    return {
        "generator": local("generator").state_dict(),
        "discriminator": local("discriminator").state_dict(),
        "ema": trainer.algorithm.ema.module.state_dict(),
        "data": trainer.data.state_dict()["position"],
        **trainer_state(trainer),
    }


def main() -> None:
    shards, out = Path(sys.argv[1]), Path(sys.argv[2])
    straight = build(shards, out / "straight")
    straight.train()
    expected = snapshot(straight)

    stop_file = out / "stop"
    os.environ["GANDIST_STOP_FILE"] = str(stop_file)
    first = build(shards, out / "stopped")
    run_phase = first.run_phase

    def phase_then_ask_to_stop(phase: Phase) -> dict[str, torch.Tensor]:
        if first.progress.step == STOP_AT - 1 and first.accelerator.is_main_process:
            stop_file.write_text("stop\n")
        return run_phase(phase)

    first.run_phase = phase_then_ask_to_stop
    stopped_at = first.train().step
    first.accelerator.wait_for_everyone()
    del os.environ["GANDIST_STOP_FILE"]

    resumed = build(shards, out / "stopped", resume="latest")
    resumed_to = resumed.train().step
    rank = resumed.accelerator.process_index
    report = {
        "stopped_at": stopped_at,
        "resumed_to": resumed_to,
        "differences": differences(snapshot(resumed), expected),
    }
    (out / f"report-{rank}.json").write_text(json.dumps(report, indent=2))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
