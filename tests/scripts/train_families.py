"""Run under torchrun with 2 ranks: train every GAN family a few steps and dump per-rank results.

Usage: torchrun --nproc_per_node 2 tests/scripts/train_families.py SHARDS OUT FAMILY[:fp16] ...

For each family it trains the family's config from configs/ (shrunk, with every training
feature switched on), then writes OUT/<run>/rank<r>.pt holding that rank's G, D and EMA
weights, so the test can compare ranks bit for bit. One launch serves all families because
starting a process group costs more than training a tiny model for a few steps.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from accelerate.state import AcceleratorState

from gandist.training.config import load_config
from gandist.training.trainer import Trainer

# Features every family trains with here, so each code path runs under 2 real ranks.
COMMON = {
    "data.num_workers": 0,
    "data.shuffle_buffer": 16,
    "model.latent_dim": 16,
    "model.g_width": 4,
    "model.d_width": 4,
    "model.mapping_layers": 2,
    "train.steps": 2,
    "train.batch_size": 8,
    "train.log_every": 1,
    "train.sample_every": 2,
    "train.num_samples": 4,
    "train.checkpoint_every": 2,
    "train.progress_bar": False,
    "train.ema_half_life_images": 64,
    "optim.lr_schedule": "cosine",
    "optim.warmup_steps": 1,
    "optim.grad_clip_norm": 10.0,
    "tracking.wandb": False,
}
RESUME_CHECKS = {"dcgan", "stylegan2:fp16"}
PER_FAMILY = {
    "dcgan": {"train.augment": "color,translation,cutout"},
    "wgan": {"train.n_critic": 2},
    "wgan-gp": {"train.n_critic": 2, "train.augment": "translation"},
    "sngan": {"train.n_critic": 2},
    "biggan": {"train.n_critic": 2, "model.latent_dim": 20},
    # R1 on every D step and path length on every G step, so both run in two steps.
    "stylegan2": {"reg.r1_every": 1, "reg.r1_gamma": 1.0, "reg.pl_weight": 2.0, "reg.pl_every": 1},
}
# Runs of a family's config with more switched on: (config, overrides).
VARIANTS = {
    # Two discriminators at two scales with every D penalty and the mode-seeking term for G.
    "dcgan-md2": (
        "dcgan",
        {
            "model.num_discriminators": 2,
            "reg.r1_gamma": 1.0,
            "reg.r1_every": 1,
            "reg.lecam_weight": 0.3,
            "reg.diversity_weight": 1.0,
        },
    ),
}


def run_family(spec: str, shards: Path, out: Path) -> dict:
    family, _, precision = spec.partition(":")
    run_name = family + (f"-{precision}" if precision else "")
    family, extra = VARIANTS.get(spec, (family, {}))
    values = COMMON | PER_FAMILY.get(family, {}) | extra
    values |= {"output_dir": out / run_name, "data.shards": shards}
    if precision:
        # GradScaler starts at 2**16 and halves on each overflowing step: give it a few steps.
        values |= {"train.mixed_precision": precision, "train.steps": 6, "train.sample_every": 6}
        values |= {"train.checkpoint_every": 6}
    cfg = load_config(f"configs/{family}.yaml", [f"{k}={v}" for k, v in values.items()])
    # Each family builds its own Accelerator in this one process; the precision may differ.
    AcceleratorState._reset_state()
    trainer = Trainer(cfg)
    # end_training() would destroy the process group the next family needs.
    trainer.accelerator.end_training = lambda: [t.finish() for t in trainer.accelerator.trackers]
    trained = [
        name for name in trainer.algorithm.networks if name.startswith(("generator", "discrim"))
    ]
    initial = {
        name: [p.detach().clone() for p in trainer.algorithm.networks[name].parameters()]
        for name in trained
    }
    trainer.train()
    rank = trainer.accelerator.process_index
    # Parameters, not buffers: BatchNorm statistics are per rank under DDP (each rank updates
    # them from its own batch after DDP broadcasts rank 0's), and checkpoints keep rank 0's.
    modules = {name: trainer.algorithm.local(name) for name in trained}
    if trainer.algorithm.ema is not None:
        modules["ema"] = trainer.algorithm.ema.module
    weights = {
        name: {key: p.detach().clone() for key, p in module.named_parameters()}
        for name, module in modules.items()
    }
    moved = {
        name: any(
            not torch.equal(a, b)
            for a, b in zip(initial[name], modules[name].parameters(), strict=True)
        )
        for name in initial
    }
    torch.save({"weights": weights, "moved": moved}, out / run_name / f"rank{rank}.pt")
    result = {"run": run_name, "steps": cfg.train.steps}
    if spec in RESUME_CHECKS:
        result["resume"] = check_resume(trainer, values)
    if precision == "fp16":
        result |= check_scalers_are_separate(trainer)
    return result


def check_resume(trainer: Trainer, values: dict) -> dict:
    """Resume a second Trainer from the run's last checkpoint; report what came back intact."""
    from gandist.runs.sample import load_generator

    cfg = load_config(
        f"configs/{trainer.cfg.model.name}.yaml",
        [f"{k}={v}" for k, v in (values | {"resume": "latest"}).items()],
    )
    AcceleratorState._reset_state()
    resumed = Trainer(cfg)
    resumed._resume()
    exported, _ = load_generator(trainer.run_dir)

    def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))

    ema, resumed_ema = trainer.algorithm.ema.module, resumed.algorithm.ema.module
    report = {
        "step": resumed.progress.step == trainer.progress.step,
        "ema": same(resumed_ema, ema),
        "exported_generator_is_ema": same(exported, ema),
        "ema_differs_from_generator": not same(ema, trainer.algorithm.local("generator")),
        "lr": [u.scheduler.get_last_lr() for u in resumed.updaters.values()]
        == [u.scheduler.get_last_lr() for u in trainer.updaters.values()],
    }
    if trainer.updaters["g"].scaler is not None:
        report["scalers"] = [u.grad_scale for u in resumed.updaters.values()] == [
            u.grad_scale for u in trainer.updaters.values()
        ]
    return report


def check_scalers_are_separate(trainer: Trainer) -> dict:
    """Make G's fp16 gradients overflow for one step and report both networks' loss scales."""
    param = next(trainer.algorithm.local("generator").parameters())
    before = {name: updater.grad_scale for name, updater in trainer.updaters.items()}
    weights_before = param.detach().clone()
    handle = param.register_hook(lambda grad: grad * math.inf)
    (g_phase,) = [p for p in trainer.algorithm.phases(trainer.progress.step) if p.name == "g"]
    trainer.run_phase(g_phase)
    handle.remove()
    skipped = torch.equal(param.detach(), weights_before)
    after = {name: updater.grad_scale for name, updater in trainer.updaters.items()}
    return {"scales_before": before, "scales_after": after, "g_step_skipped": skipped}


def check_unlabelled_batches_refused(shards: Path, out: Path) -> str:
    cfg = load_config(
        "configs/conditional.yaml",
        [
            f"{k}={v}"
            for k, v in (COMMON | {"output_dir": out / "unlabelled", "data.shards": shards}).items()
        ],
    )
    AcceleratorState._reset_state()
    batch = {"image": torch.zeros(4, 3, 32, 32), "label": torch.full((4,), -1)}
    trainer = Trainer(cfg, batches=[batch])
    try:
        trainer.train_step()
    except ValueError as err:
        return str(err)
    return ""


def main() -> None:
    shards, out = Path(sys.argv[1]), Path(sys.argv[2])
    results = [run_family(spec, shards, out) for spec in sys.argv[3:]]
    refusal = check_unlabelled_batches_refused(shards, out)
    rank = torch.distributed.get_rank()
    (out / f"results-rank{rank}.json").write_text(
        json.dumps({"runs": results, "unlabelled_error": refusal}, indent=2)
    )
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
