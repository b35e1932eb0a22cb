"""The textbook single-process CycleGAN loop and unpaired batches, for `gandist bench train`."""

from __future__ import annotations

import itertools
import time
from typing import Any

import torch
import torch.nn.functional as F

from gandist.data.loader import build_loader
from gandist.data.unpaired import domain_b_config
from gandist.registry import MODELS
from gandist.training.config import Config
from gandist.training.image_pool import ImagePool


def preload_unpaired(cfg: Config, num_batches: int) -> list[dict[str, Any]]:
    """A few decoded {"a": {"image"}, "b": {"image"}} batches, read once."""
    domains = []
    for data in (cfg.data, domain_b_config(cfg.data)):
        loader = build_loader(
            data, batch_size=cfg.train.batch_size, rank=0, world_size=1, seed=cfg.train.seed
        )
        domains.append([{"image": b["image"]} for b in itertools.islice(iter(loader), num_batches)])
    return [{"a": a, "b": b} for a, b in zip(*domains, strict=True)]


def plain_cyclegan_loop(
    cfg: Config, batches: list[dict[str, Any]], steps: int, window: int
) -> list[float]:
    """The reference implementation's step in plain PyTorch: G_AB and G_BA under one Adam
    (LSGAN, cycle and identity L1) with both D's frozen, then both D's on pooled fakes.

    Returns images/s (both domains' images, as the Trainer counts them) per `window` steps.
    """
    torch.manual_seed(cfg.train.seed)
    build = MODELS.get(cfg.model.name)
    g_ab, d_b = build(cfg.model, cfg.data.resolution, cfg.data.channels)
    g_ba, d_a = build(cfg.model, cfg.data.resolution, cfg.data.channels)
    betas = tuple(cfg.optim.betas)
    g_opt = torch.optim.Adam([*g_ab.parameters(), *g_ba.parameters()], cfg.optim.g_lr, betas=betas)
    d_opt = torch.optim.Adam([*d_a.parameters(), *d_b.parameters()], cfg.optim.d_lr, betas=betas)
    pool_a, pool_b = ImagePool(cfg.cycle.pool_size), ImagePool(cfg.cycle.pool_size)
    lam, idt = cfg.cycle.cycle_weight, cfg.cycle.identity_weight * cfg.cycle.cycle_weight

    def mse(logits: torch.Tensor, target: float) -> torch.Tensor:
        return F.mse_loss(logits, torch.full_like(logits, target))

    rates, start = [], time.perf_counter()
    for step, batch in zip(range(1, steps + 1), itertools.cycle(batches), strict=False):
        real_a, real_b = batch["a"]["image"], batch["b"]["image"]
        d_a.requires_grad_(False)
        d_b.requires_grad_(False)
        fake_b, fake_a = g_ab(real_a), g_ba(real_b)
        g_loss = (
            mse(d_b(fake_b), 1.0)
            + mse(d_a(fake_a), 1.0)
            + lam * (F.l1_loss(g_ba(fake_b), real_a) + F.l1_loss(g_ab(fake_a), real_b))
            + idt * (F.l1_loss(g_ab(real_b), real_b) + F.l1_loss(g_ba(real_a), real_a))
        )
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        d_a.requires_grad_(True)
        d_b.requires_grad_(True)

        pooled_a, pooled_b = pool_a.query(fake_a), pool_b.query(fake_b)
        d_loss = 0.5 * (mse(d_a(real_a), 1.0) + mse(d_a(pooled_a), 0.0)) + 0.5 * (
            mse(d_b(real_b), 1.0) + mse(d_b(pooled_b), 0.0)
        )
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        if step % window == 0:
            rates.append(window * 2 * real_a.shape[0] / (time.perf_counter() - start))
            start = time.perf_counter()
    return rates
