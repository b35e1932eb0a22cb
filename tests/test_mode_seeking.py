"""The mode-seeking (diversity) term for G: by hand, it pushes paired images apart, and a
training run with reg.diversity_weight logs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gandist import rundir
from gandist.losses import mode_seeking_penalty
from gandist.training.config import load_config
from gandist.training.trainer import Trainer
from tests.conftest import tiny_overrides


def test_mode_seeking_penalty_by_hand() -> None:
    images = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    latents = torch.tensor([[0.0], [0.0], [2.0], [4.0]])
    penalty, metrics = mode_seeking_penalty(images, latents)
    # pairs (0, 2) and (1, 3): image gap mean(1, 0, 0, 0) = 0.25, latent gap mean(2, 4) = 3
    ratio = 0.25 / 3
    assert metrics["mode_seeking_ratio"].item() == pytest.approx(ratio)
    assert penalty.item() == pytest.approx(1 / (ratio + 1e-5))
    with pytest.raises(ValueError, match="at least 2"):
        mode_seeking_penalty(images[:1], latents[:1])


def test_descending_the_penalty_moves_paired_images_apart() -> None:
    torch.manual_seed(0)
    images = (torch.randn(8, 1, 4, 4) * 0.01).requires_grad_(True)  # nearly collapsed
    latents = torch.randn(8, 16)
    before = (images[:4] - images[4:]).abs().mean().item()
    penalty, _ = mode_seeking_penalty(images, latents)
    penalty.backward()
    with torch.no_grad():
        images -= 1e-6 * images.grad
    assert (images[:4] - images[4:]).abs().mean().item() > before


def test_training_with_the_diversity_term_logs_it(tmp_path: Path, glyph_shards: Path) -> None:
    extra = {"tracking.wandb": False, "reg.diversity_weight": 1.0, "train.steps": 2}
    Trainer(load_config(None, tiny_overrides(tmp_path / "run", glyph_shards, **extra))).train()
    rows = [r for r in rundir.read_metrics(tmp_path / "run") if "train/mode_seeking" in r]
    assert rows and rows[-1]["train/mode_seeking"] > 0 and "train/mode_seeking_ratio" in rows[-1]
