"""Generator EMA, DiffAugment, LR schedules, the diversity signal and the new config keys."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gandist.augment import DiffAugment
from gandist.diagnostics import sample_diversity
from gandist.distributed import resolve_mixed_precision
from gandist.ema import GeneratorEMA
from gandist.errors import ConfigError
from gandist.schedules import lr_multiplier
from gandist.training.config import load_config


def _net(value: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
    return net


def test_ema_update_moves_half_way_after_half_life_images() -> None:
    generator = _net(0.0)
    ema = GeneratorEMA(generator, half_life_images=64)
    with torch.no_grad():
        for p in generator.parameters():
            p.fill_(1.0)
        generator[1].running_mean.fill_(7.0)
    ema.update(generator, num_images=64)
    for p in ema.module.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.5))
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 7.0))  # buffers copied
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_decay_independent_of_how_images_split_into_steps() -> None:
    """2 GPUs x 16 images per step, 4 steps == 1 GPU x 32, 2 steps == one step of 64."""
    results = []
    for updates, images in ((4, 16), (2, 32), (1, 64)):
        generator = _net(0.0)
        ema = GeneratorEMA(generator, half_life_images=100)
        with torch.no_grad():
            for p in generator.parameters():
                p.fill_(1.0)
        for _ in range(updates):
            ema.update(generator, images)
        results.append(next(ema.module.parameters()).detach().clone())
    expected = 1 - 0.5 ** (64 / 100)
    for value in results:
        assert torch.allclose(value, torch.full_like(value, expected))


def test_ema_state_dict_round_trip() -> None:
    ema = GeneratorEMA(_net(0.3), half_life_images=10)
    other = GeneratorEMA(_net(0.0), half_life_images=10)
    other.load_state_dict(ema.state_dict())
    assert all(
        torch.equal(a, b)
        for a, b in zip(ema.module.parameters(), other.module.parameters(), strict=True)
    )
    with pytest.raises(ValueError):
        GeneratorEMA(_net(0.0), half_life_images=0)


def test_diffaugment_shapes_gradients_and_policy_errors() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 16, 16).requires_grad_(True)
    augment = DiffAugment("color,translation,cutout")
    out = augment(images)
    assert out.shape == images.shape
    out.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert not DiffAugment("")
    with pytest.raises(ConfigError, match=r"'flip' in train.augment.*translation"):
        load_config(None, ["train.augment=flip,cutout"])


def test_translation_shifts_and_cutout_zeroes_a_square() -> None:
    torch.manual_seed(1)
    ones = torch.ones(64, 1, 16, 16)
    shifted = DiffAugment("translation")(ones)
    # Shifted-in rows and columns are zero, never more than 2 px (1/8 of 16) on each axis.
    kept = shifted.flatten(1).sum(1)
    assert (kept <= 256).all() and (kept >= 14 * 14).all() and (kept < 256).any()
    assert set(shifted.unique().tolist()) <= {0.0, 1.0}
    cut = DiffAugment("cutout")(ones)
    zeros = (cut == 0).flatten(1).sum(1)
    assert (zeros <= 8 * 8).all() and (zeros > 0).any()


def test_lr_multiplier_schedules() -> None:
    assert lr_multiplier(0, "constant", warmup_steps=4, total_steps=100) == 0.25
    assert lr_multiplier(3, "constant", 4, 100) == 1.0
    assert lr_multiplier(50, "constant", 0, 100) == 1.0
    assert lr_multiplier(50, "linear", 0, 100) == pytest.approx(0.5)
    assert lr_multiplier(100, "linear", 0, 100) == 0.0
    assert lr_multiplier(50, "cosine", 0, 100) == pytest.approx(0.5)
    assert lr_multiplier(0, "cosine", 0, 100) == pytest.approx(1.0)


def test_sample_diversity_is_zero_for_a_collapsed_batch() -> None:
    same = torch.ones(8, 3, 4, 4)
    assert sample_diversity(same).item() == 0.0
    pair = torch.stack([torch.full((3, 4, 4), -1.0), torch.full((3, 4, 4), 1.0)])
    assert sample_diversity(pair).item() == pytest.approx(2.0)  # RMS distance per pixel
    assert sample_diversity(same[:1]).item() == 0.0


def test_new_config_keys_validate() -> None:
    with pytest.raises(ConfigError, match="reg.gp_weight"):
        load_config(None, ["reg.gp_weight=-1"])
    with pytest.raises(ConfigError, match="train.n_critic"):
        load_config(None, ["train.n_critic=0"])
    with pytest.raises(ConfigError, match="optim.lr_schedule"):
        load_config(None, ["optim.lr_schedule=step"])
    cfg = load_config(None, [])
    assert cfg.train.mixed_precision == "auto"
    assert resolve_mixed_precision("fp16") == "fp16"
    if not torch.cuda.is_available():
        assert resolve_mixed_precision("auto") == "fp32"
