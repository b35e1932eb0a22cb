"""Generator EMA, DiffAugment, LR schedules, the diversity signal and the new config keys."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gandist.augment import DiffAugment
from gandist.diagnostics import sample_diversity
from gandist.distributed import resolve_mixed_precision
from gandist.ema import GeneratorEMA
from gandist.errors import ConfigError
from gandist.schedules import build_scheduler, lr_multiplier
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


def test_ema_decay_is_half_per_half_life_and_one_for_no_images() -> None:
    ema = GeneratorEMA(_net(0.0), half_life_images=1000)
    assert ema.decay(1000) == 0.5
    assert ema.decay(2000) == 0.25
    assert ema.decay(0) == 1.0
    assert ema.decay(250) == pytest.approx(0.5**0.25)
    assert GeneratorEMA(_net(0.0), half_life_images=1).decay(1) == 0.5


def test_ema_is_a_frozen_eval_copy_that_moves_only_on_update() -> None:
    generator = _net(0.0)
    ema = GeneratorEMA(generator, half_life_images=10)
    assert not ema.module.training and generator.training
    with torch.no_grad():
        for p in generator.parameters():
            p.fill_(1.0)
        generator[1].running_var.fill_(3.0)
        generator[1].num_batches_tracked.fill_(5)
    assert all(torch.equal(p, torch.zeros_like(p)) for p in ema.module.parameters())
    ema.update(generator, num_images=0)  # no images: weights stay, buffers follow G
    assert all(torch.equal(p, torch.zeros_like(p)) for p in ema.module.parameters())
    assert torch.equal(ema.module[1].running_var, torch.full((2,), 3.0))
    assert ema.module[1].num_batches_tracked.item() == 5
    ema.update(generator, num_images=20)  # two half-lives: 3/4 of the way
    for p in ema.module.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 0.75))


def test_ema_rampup_copies_g_at_the_start_and_caps_the_half_life_by_images_seen() -> None:
    """StyleGAN2-ADA's ema_rampup: half-life min(half_life, rampup x images G trained on)."""
    ema = GeneratorEMA(_net(0.0), half_life_images=10000, rampup=0.05)
    assert ema.half_life(0) == 0.0
    assert ema.half_life(6400) == pytest.approx(320.0)  # 0.05 x 6400, well under 10000
    assert ema.half_life(10**6) == 10000.0  # the ramp is over: the configured half-life
    assert ema.decay(64, images_seen=6400) == pytest.approx(0.5 ** (64 / 320))
    assert ema.decay(64, images_seen=10**6) == pytest.approx(0.5 ** (64 / 10000))
    assert ema.decay(0, images_seen=0) == 1.0  # no images, no move
    generator = _net(0.0)
    with torch.no_grad():
        for p in generator.parameters():
            p.fill_(1.0)
    ema.update(generator, num_images=64, images_seen=0)  # the first step: the EMA is G
    assert all(torch.equal(p, torch.ones_like(p)) for p in ema.module.parameters())
    # Without the ramp the same first update keeps nearly all of the initial weights.
    plain = GeneratorEMA(_net(0.0), half_life_images=10000)
    plain.update(generator, num_images=64, images_seen=0)
    assert all(p.max() < 0.01 for p in plain.module.parameters())
    with pytest.raises(ValueError, match="rampup must be >= 0, got -0.1"):
        GeneratorEMA(_net(0.0), half_life_images=10, rampup=-0.1)


def test_ema_with_rampup_after_steps_trails_g_by_a_few_percent_not_the_init() -> None:
    """225 steps of 64 images, G walking linearly from 0 to 1: with the ramp the EMA ends near
    G (it averages the last ~5% of training); without it, 37% of the init is still in it."""

    def final_value(rampup: float) -> float:
        generator = _net(0.0)
        ema = GeneratorEMA(generator, half_life_images=10000, rampup=rampup)
        for step in range(225):
            with torch.no_grad():
                for p in generator.parameters():
                    p.fill_((step + 1) / 225)
            ema.update(generator, num_images=64, images_seen=step * 64)
        return next(ema.module.parameters()).mean().item()

    assert final_value(0.05) > 0.9
    assert final_value(0.0) < 0.55


def test_ema_refuses_a_generator_whose_parameters_do_not_match() -> None:
    ema = GeneratorEMA(_net(0.0), half_life_images=10)
    other = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    other.add_module("extra", nn.Linear(2, 2))
    with pytest.raises(ValueError, match="longer"):  # zip(strict=True) on a longer list
        ema.update(other, num_images=1)
    renamed = nn.Sequential()
    renamed.add_module("first", nn.Linear(2, 2))
    renamed.add_module("1", nn.BatchNorm1d(2))
    with pytest.raises(AssertionError, match="EMA parameter 0.weight does not match generator"):
        ema.update(renamed, num_images=1)


def test_ema_state_dict_round_trip() -> None:
    ema = GeneratorEMA(_net(0.3), half_life_images=10)
    other = GeneratorEMA(_net(0.0), half_life_images=10)
    other.load_state_dict(ema.state_dict())
    assert all(
        torch.equal(a, b)
        for a, b in zip(ema.module.parameters(), other.module.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="half_life_images must be > 0, got 0"):
        GeneratorEMA(_net(0.0), half_life_images=0)


def test_diffaugment_shapes_gradients_and_policy_errors() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 16, 16).requires_grad_(True)
    augment = DiffAugment("color,translation,cutout")
    out = augment(images)
    assert out.shape == images.shape
    out.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert not DiffAugment("") and not DiffAugment(" , ")
    assert DiffAugment("color") and DiffAugment("cutout")
    with pytest.raises(
        ConfigError,
        match=r"unknown augmentation 'flip' in train.augment='flip,cutout'; "
        r"use a comma list of color, translation, cutout \(or empty for none\)",
    ):
        load_config(None, ["train.augment=flip,cutout"])


def _recover_colour_factors(out: torch.Tensor, lum: torch.Tensor, dev: torch.Tensor):
    """Per image (brightness b, saturation s, contrast c) from colour(l + d) - k = (s d + l) c + b
    for an input k + l + d,
    where l is equal over channels, d sums to 0 over channels, and both average to 0."""
    brightness = out.mean(dim=(1, 2, 3))  # [B]
    centred = out - brightness[:, None, None, None]
    luminance_part = centred.mean(dim=1, keepdim=True)  # c l
    contrast = (luminance_part * lum).sum(dim=(1, 2, 3)) / lum.square().sum()
    deviation_part = centred - luminance_part  # s c d
    saturation = (deviation_part * dev).sum(dim=(1, 2, 3)) / dev.square().sum() / contrast
    return brightness, saturation, contrast


def test_colour_draws_brightness_saturation_and_contrast_in_the_papers_ranges() -> None:
    """DiffAugment's rand_brightness adds U(-0.5, 0.5), rand_saturation scales the deviation
    from the channel mean by U(0, 2), rand_contrast scales the deviation from the image mean by
    U(0.5, 1.5): recovered per image from the output, each spans its whole range."""
    torch.manual_seed(2)
    num = 4096
    lum = torch.randn(1, 1, 4, 4)
    lum -= lum.mean()
    dev = torch.randn(1, 3, 4, 4)
    dev -= dev.mean(dim=1, keepdim=True)
    offset = 0.3  # a mean of its own, which saturation and contrast must keep
    out = DiffAugment("color")((offset + lum + dev).expand(num, -1, -1, -1)) - offset
    brightness, saturation, contrast = _recover_colour_factors(out, lum, dev)
    # The model (s d + l) c + b explains the output exactly.
    rebuilt = (saturation[:, None, None, None] * dev + lum) * contrast[:, None, None, None]
    torch.testing.assert_close(out, rebuilt + brightness[:, None, None, None], atol=1e-5, rtol=0)
    for values, (low, high) in (
        (brightness, (-0.5, 0.5)),
        (saturation, (0.0, 2.0)),
        (contrast, (0.5, 1.5)),
    ):
        span = high - low
        assert values.min() >= low - 1e-4 and values.max() <= high + 1e-4
        assert values.min() < low + 0.01 * span and values.max() > high - 0.01 * span
        assert values.mean().item() == pytest.approx((low + high) / 2, abs=0.02 * span)
        assert values.std().item() == pytest.approx(span / math.sqrt(12), rel=0.05)  # uniform
    # Three independent draws per image, not one shared.
    assert abs(torch.corrcoef(torch.stack([brightness, saturation, contrast]))[0, 1:]).max() < 0.1


def _find_shift(image: torch.Tensor, shifted: torch.Tensor, max_shift: int) -> tuple[int, int]:
    """The one (dy, dx) with shifted[y, x] = image[y + dy, x + dx] and zeros outside."""
    height, width = image.shape[-2:]
    padded = torch.nn.functional.pad(image, [max_shift] * 4)
    found = [
        (dy, dx)
        for dy in range(-max_shift, max_shift + 1)
        for dx in range(-max_shift, max_shift + 1)
        if torch.equal(
            padded[..., max_shift + dy : max_shift + dy + height,
                   max_shift + dx : max_shift + dx + width],
            shifted,
        )
    ]  # fmt: skip
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(("size", "num"), [(16, 256), (32, 64)])
def test_translation_moves_each_image_by_up_to_an_eighth_filling_zeros(size: int, num: int) -> None:
    torch.manual_seed(1)
    max_shift = size // 8
    # Every pixel of every channel distinct and nonzero, so a shift is identified exactly.
    images = torch.arange(1.0, 1 + 3 * size * size).view(1, 3, size, size).repeat(num, 1, 1, 1)
    images = images + 10000 * torch.arange(num).view(num, 1, 1, 1)
    shifted = DiffAugment("translation")(images)
    shifts = [_find_shift(images[i], shifted[i], max_shift) for i in range(num)]
    for axis in (0, 1):  # both directions, up to the largest shift
        assert {s[axis] for s in shifts} >= {-max_shift, 0, max_shift}
    if size == 16:
        assert set(shifts) == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}


@pytest.mark.parametrize("size", [16, 10])  # squares of 8 and 5 pixels: even and odd
def test_cutout_zeroes_one_square_of_half_the_size_clipped_at_the_border(size: int) -> None:
    torch.manual_seed(3)
    num, cut = 512, (size + 1) // 2
    images = torch.rand(num, 3, size, size) + 1  # no zeros of its own
    out = DiffAugment("cutout")(images)
    zero = out == 0  # [B, C, H, W]
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # the same square in every channel
    mask = zero[:, 0]
    kept = ~zero
    assert torch.equal(out[kept], images[kept])  # the rest untouched
    rows, cols = mask.any(dim=2), mask.any(dim=1)  # [B, H], [B, W]
    # A rectangle: every pixel in its rows x cols is zero, and only those.
    assert torch.equal(mask, rows[:, :, None] & cols[:, None, :])
    for hit, top in ((rows, rows.float().argmax(1)), (cols, cols.float().argmax(1))):
        extent = hit.sum(1)
        # Centred anywhere from the first to the last pixel (the paper's offsets): at either
        # border at least half of it shows, and only a square cut by a border is smaller.
        smallest = cut - cut // 2
        assert extent.min() == smallest and extent.max() == cut
        assert ((extent < cut) <= (hit[:, 0] | hit[:, -1])).all()
        assert ((extent == smallest) & (top == 0)).any()
        assert ((extent == smallest) & (top == size - smallest)).any()
        assert set(top.tolist()) == set(range(size - smallest + 1))


def test_diffaugment_keeps_dtype_and_device() -> None:
    """Random draws are made on the images' device in their dtype: on the meta device a tensor
    made on the CPU cannot be mixed in, the same mistake that would fail on a GPU."""
    for policy in ("color", "translation", "cutout"):
        out = DiffAugment(policy)(torch.empty(4, 3, 16, 16, device="meta"))
        assert out.device.type == "meta" and out.shape == (4, 3, 16, 16), policy
        half = DiffAugment(policy)(torch.rand(4, 3, 16, 16).bfloat16())
        assert half.dtype == torch.bfloat16, policy


def test_policy_runs_colour_translation_cutout_in_the_papers_order_whatever_is_written() -> None:
    torch.manual_seed(4)
    images = torch.rand(64, 3, 8, 8) + 1
    out = DiffAugment(" cutout , color ")(images)  # cutout last: its zeros survive colour
    assert ((out == 0).flatten(1).sum(1) >= 3 * 2 * 2).all()
    assert not torch.equal(out[out != 0], images[out != 0])  # and colour did run


def test_lr_multiplier_schedules() -> None:
    assert lr_multiplier(0, "constant", warmup_steps=4, total_steps=100) == 0.25
    assert lr_multiplier(3, "constant", 4, 100) == 1.0
    assert lr_multiplier(4, "constant", 4, 100) == 1.0
    assert lr_multiplier(50, "constant", 0, 100) == 1.0
    assert lr_multiplier(50, "linear", 0, 100) == pytest.approx(0.5)
    assert lr_multiplier(100, "linear", 0, 100) == 0.0
    assert lr_multiplier(150, "linear", 0, 100) == 0.0  # held at 0 past the end
    assert lr_multiplier(50, "cosine", 0, 100) == pytest.approx(0.5)
    assert lr_multiplier(0, "cosine", 0, 100) == pytest.approx(1.0)
    assert lr_multiplier(25, "cosine", 0, 100) == pytest.approx(0.5 * (1 + math.sqrt(0.5)))
    assert lr_multiplier(150, "cosine", 0, 100) == pytest.approx(0.0)
    # One step after warm-up: decay spreads over at least one step, never divides by zero.
    assert lr_multiplier(0, "linear", 0, 1) == 1.0
    assert lr_multiplier(1, "linear", 0, 1) == 0.0
    assert lr_multiplier(5, "linear", 4, 4) == 0.0
    with pytest.raises(ValueError, match=r"'step'.*constant, linear or cosine"):
        lr_multiplier(5, "step", 0, 10)


# Learning rates read from the optimizer after k scheduler steps (base lr 0.1, warm-up 2 steps,
# 10 steps in all): k = 0, 1 warm up to 0.05, 0.1; decay runs over steps 2..10.
LR_AFTER_STEPS = {
    "constant": [0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
    "linear": [0.05, 0.1, 0.1, 0.0875, 0.075, 0.0625, 0.05, 0.0375, 0.025, 0.0125, 0.0, 0.0],
    "cosine": [0.05, 0.1] + [0.05 * (1 + math.cos(math.pi * i / 8)) for i in range(9)] + [0.0],
}


@pytest.mark.parametrize("schedule", sorted(LR_AFTER_STEPS))
def test_scheduler_sets_the_optimizers_lr_after_each_step(schedule: str) -> None:
    weight = nn.Parameter(torch.zeros(2))
    bias = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam(
        [{"params": [weight]}, {"params": [bias], "lr": 0.02}], lr=0.1, betas=(0.0, 0.99)
    )
    scheduler = build_scheduler(optimizer, schedule, warmup_steps=2, total_steps=10)
    seen, seen_bias = [], []
    for _ in LR_AFTER_STEPS[schedule]:
        seen.append(optimizer.param_groups[0]["lr"])
        seen_bias.append(optimizer.param_groups[1]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx(LR_AFTER_STEPS[schedule], abs=1e-12)
    assert seen_bias == pytest.approx([0.2 * lr for lr in LR_AFTER_STEPS[schedule]], abs=1e-12)
    assert scheduler.last_epoch == len(seen)


def test_scheduler_state_round_trip_continues_the_schedule() -> None:
    def make():
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        return optimizer, build_scheduler(optimizer, "linear", warmup_steps=2, total_steps=10)

    optimizer, scheduler = make()
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    resumed_optimizer, resumed = make()
    resumed.load_state_dict(scheduler.state_dict())
    resumed_optimizer.step()
    resumed.step()
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(LR_AFTER_STEPS["linear"][6])


def test_build_scheduler_refuses_an_unknown_schedule_naming_it() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=r"unknown lr schedule 'step'"):
        build_scheduler(optimizer, "step", warmup_steps=0, total_steps=10)


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
