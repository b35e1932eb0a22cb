"""The Trainer in one process: what a run writes, resuming, the two phases, and bf16 autocast."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from gandist import cli
from gandist.distributed import NotDistributedError, check_distributed
from gandist.training.config import load_config
from gandist.training.trainer import Trainer
from tests import wandb_log
from tests.conftest import tiny_overrides


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_metrics_samples_checkpoints_and_offline_wandb(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    state = Trainer(load_config(None, tiny_overrides(run_dir, glyph_shards))).train()
    assert (state.step, state.images_seen) == (4, 32)

    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [2, 4]
    for key in (
        "train/d_loss",
        "train/g_loss",
        "train/d_real",
        "train/d_fake",
        "perf/images_per_s",
    ):
        assert all(math.isfinite(r[key]) for r in rows), key
    assert [r["train/images_seen"] for r in rows] == [16, 32]

    grids = sorted((run_dir / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["step-00000002.png", "step-00000004.png"]
    assert Image.open(grids[-1]).size == (4 * 34 + 2, 4 * 34 + 2)  # 16 samples, 32 px, 2 px pad

    checkpoints = sorted((run_dir / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-00000002", "step-00000004"]
    assert (checkpoints[-1] / "COMPLETE").is_file() and (checkpoints[-1] / "generator.pt").is_file()
    assert load_config(run_dir / "config.yaml").train.steps == 4

    history = wandb_log.history(wandb_log.run_file(run_dir))
    logged = [row for row in history if "train/d_loss" in row]
    assert [row["_step"] for row in logged] == [2, 4]
    grids_logged = [
        row["_step"] for row in history if row.get("samples/_type") == "images/separated"
    ]
    assert grids_logged == [2, 4]


def test_resume_latest_continues_at_the_next_step(tmp_path: Path, glyph_shards: Path) -> None:
    run_dir = tmp_path / "run"
    Trainer(load_config(None, tiny_overrides(run_dir, glyph_shards))).train()
    resumed = Trainer(
        load_config(
            None, tiny_overrides(run_dir, glyph_shards, **{"train.steps": 6, "resume": "latest"})
        )
    )
    assert resumed.train().step == 6
    assert [r["step"] for r in read_metrics(run_dir)] == [2, 4, 6]
    assert json.loads((run_dir / "run.json").read_text())["resumed_at_step"] == 4
    # Pruning keeps train.checkpoints_total_limit (3) complete checkpoints.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step-00000002",
        "step-00000004",
        "step-00000006",
    ]
    steps = wandb_log.wait_for_step(run_dir, 6)
    assert steps == sorted(steps) and steps[-1] == 6
    assert len({i for f in wandb_log.run_files(run_dir) for i in wandb_log.run_ids(f)}) == 1


def test_g_step_leaves_discriminator_grads_empty_and_d_step_leaves_generator_grads_empty(
    tmp_path: Path, glyph_shards: Path
) -> None:
    real = {"image": torch.rand(8, 3, 32, 32) * 2 - 1}
    cfg = load_config(None, tiny_overrides(tmp_path / "run", glyph_shards))
    trainer = Trainer(cfg, batches=itertools.repeat(real))
    generator, discriminator = trainer.algorithm.networks.values()
    d_phase, g_phase = trainer.algorithm.phases(0)
    trainer.run_phase(d_phase)
    assert all(p.grad is None for p in generator.parameters())
    assert all(p.grad is not None for p in discriminator.parameters())
    discriminator.zero_grad(set_to_none=True)
    trainer.run_phase(g_phase)
    assert all(p.grad is None for p in discriminator.parameters())
    assert all(p.grad is not None for p in generator.parameters())
    assert all(p.requires_grad for p in discriminator.parameters())  # unfrozen again


def test_bf16_autocast_runs_the_networks_in_bfloat16_on_cpu(
    tmp_path: Path, glyph_shards: Path
) -> None:
    cfg = load_config(
        None, tiny_overrides(tmp_path / "run", glyph_shards, **{"train.mixed_precision": "bf16"})
    )
    trainer = Trainer(cfg)
    seen: set[torch.dtype] = set()
    for module in trainer.algorithm.local("discriminator").modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    state = trainer.train()
    assert state.step == 4
    assert seen == {torch.bfloat16}
    assert all(math.isfinite(r["train/d_loss"]) for r in read_metrics(tmp_path / "run"))


def test_several_processes_that_do_not_form_a_group_are_refused() -> None:
    with pytest.raises(NotDistributedError, match="WORLD_SIZE=2.*train independently"):
        check_distributed(1, {"WORLD_SIZE": "2"})
    check_distributed(2, {"WORLD_SIZE": "2"})
    check_distributed(1, {})


def test_sample_command_draws_a_grid_from_a_run(
    tmp_path: Path, glyph_shards: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    Trainer(load_config(None, tiny_overrides(run_dir, glyph_shards))).train()
    out = tmp_path / "grid.png"
    assert cli.main(["sample", str(run_dir), "--num", "9", "--out", str(out)]) == 0
    assert Image.open(out).size == (3 * 34 + 2, 3 * 34 + 2)
    checkpoint = run_dir / "checkpoints" / "step-00000002"
    assert cli.main(["sample", str(checkpoint), "--num", "4", "--out", str(out)]) == 0
    assert cli.main(["sample", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_vanilla_mlp_gan_trains_on_grayscale_glyphs(tmp_path: Path, glyph_shards: Path) -> None:
    overrides = tiny_overrides(
        tmp_path / "run",
        glyph_shards,
        **{"model.name": "mlp", "data.channels": 1, "tracking.wandb": False},
    )
    trainer = Trainer(load_config(None, overrides))
    assert trainer.train().step == 4
    rows = read_metrics(tmp_path / "run")
    assert all(math.isfinite(r["train/g_loss"]) for r in rows)
    grid = Image.open(tmp_path / "run" / "samples" / "step-00000004.png")
    assert grid.mode == "RGB"  # save_image repeats the one channel three times
    red, green, blue = grid.split()
    assert red.tobytes() == green.tobytes() == blue.tobytes()
