"""StyleGAN2's Adam correction for lazy regularisation, read from the optimizers a Trainer built."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from gandist.training.config import load_config
from gandist.training.trainer import Trainer

G_LR, D_LR, BETAS = 0.002, 0.003, (0.5, 0.99)


def _adam_groups(tmp_path: Path, shards: Path, **reg: object) -> dict[str, dict]:
    overrides = {
        "output_dir": tmp_path / "run",
        "data.shards": shards,
        "data.num_workers": 0,
        "model.latent_dim": 16,
        "model.g_width": 4,
        "model.d_width": 4,
        "model.mapping_layers": 2,
        "train.batch_size": 4,
        "train.progress_bar": False,
        "tracking.wandb": False,
        "optim.g_lr": G_LR,
        "optim.d_lr": D_LR,
        "optim.betas": f"[{BETAS[0]},{BETAS[1]}]",
    } | {f"reg.{k}": v for k, v in reg.items()}
    cfg = load_config("configs/stylegan2.yaml", [f"{k}={v}" for k, v in overrides.items()])
    batch = {"image": torch.zeros(4, 1, 32, 32), "label": torch.zeros(4, dtype=torch.long)}
    trainer = Trainer(cfg, batches=itertools.repeat(batch))
    return {name: u.torch_optimizer.param_groups[0] for name, u in trainer.updaters.items()}


def test_without_lazy_penalties_adam_runs_at_the_configured_rate(
    tmp_path: Path, glyph_shards: Path
) -> None:
    groups = _adam_groups(tmp_path, glyph_shards, r1_gamma=0.0, pl_weight=0.0)
    assert groups["g"]["lr"] == pytest.approx(G_LR) and groups["d"]["lr"] == pytest.approx(D_LR)
    assert groups["g"]["betas"] == pytest.approx(BETAS) == groups["d"]["betas"]


def test_lazy_r1_and_path_length_scale_lr_and_betas_by_k_over_k_plus_one(
    tmp_path: Path, glyph_shards: Path
) -> None:
    groups = _adam_groups(
        tmp_path, glyph_shards, r1_gamma=0.01, r1_every=16, pl_weight=2.0, pl_every=4
    )
    d_ratio, g_ratio = 16 / 17, 4 / 5  # StyleGAN2, Appendix B: c = k / (k + 1)
    assert groups["d"]["lr"] == pytest.approx(D_LR * d_ratio)
    assert groups["d"]["betas"] == pytest.approx(tuple(b**d_ratio for b in BETAS))
    assert groups["g"]["lr"] == pytest.approx(G_LR * g_ratio)
    assert groups["g"]["betas"] == pytest.approx(tuple(b**g_ratio for b in BETAS))


def test_a_penalty_on_every_step_is_not_lazy_and_leaves_adam_alone(
    tmp_path: Path, glyph_shards: Path
) -> None:
    groups = _adam_groups(tmp_path, glyph_shards, r1_gamma=0.01, r1_every=1)
    assert groups["d"]["lr"] == pytest.approx(D_LR)
    assert groups["d"]["betas"] == pytest.approx(BETAS)
