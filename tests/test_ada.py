"""Adaptive discriminator augmentation: the pipeline is differentiable and the identity at p=0,
p follows the overfitting signal with one all-reduce, is logged, checkpointed and resumed."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gandist import ada, checkpoint, rundir
from gandist.errors import ConfigError
from gandist.training.config import load_config
from gandist.training.trainer import Trainer
from tests.conftest import tiny_overrides

TRANSFORMS = [ada.xflip, ada.rotate90, ada.translate, ada.colour, ada.augment]


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: t.__name__)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_transform_is_the_identity_at_p0(transform, channels: int) -> None:
    x = torch.randn(6, channels, 8, 8)
    assert torch.equal(transform(x, 0.0), x)
    assert torch.equal(transform(x, torch.tensor(0.0)), x)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: t.__name__)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_transform_changes_images_at_p1_and_passes_gradients(transform, channels) -> None:
    torch.manual_seed(0)
    x = torch.randn(16, channels, 8, 8, requires_grad=True)
    out = transform(x, 1.0)
    assert out.shape == x.shape
    assert not torch.allclose(out, x)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()


def test_blits_move_pixels_without_changing_them() -> None:
    torch.manual_seed(1)
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    assert torch.equal(ada.xflip(x, 1.0), x.flip(3))
    turned = ada.rotate90(x, 1.0)
    for i in range(2):
        assert any(torch.equal(turned[i], torch.rot90(x[i], k, (1, 2))) for k in (1, 2, 3))
    # Translation gathers: its gradient counts how often each input pixel is used, H*W in all.
    x = x.clone().requires_grad_(True)
    moved = ada.translate(x, 1.0)
    assert set(moved.detach().unique().tolist()) <= set(x.detach().unique().tolist())
    moved.sum().backward()
    assert x.grad.sum(dim=(1, 2, 3)).tolist() == [16.0, 16.0]


def test_p_rises_while_d_is_sure_of_reals_and_falls_back_when_it_is_not() -> None:
    controller = ada.AdaptiveAugment(target=0.6, interval=2, ramp_images=1000)
    reductions = []

    def reduce_sum(t: torch.Tensor) -> torch.Tensor:
        reductions.append(t.clone())
        return t

    overfit = torch.tensor([3.0, 2.0, 1.0, 0.5])  # every real called real: r_t = 1
    for _ in range(3):
        controller.observe(overfit)
        controller.observe(overfit)
        controller.adjust(images_since=100, reduce_sum=reduce_sum)
    assert controller.metrics()["aug/rt"].item() == 1.0
    assert controller.p.item() == pytest.approx(0.3)
    assert len(reductions) == 3 and reductions[0].tolist() == [8.0, 8.0]  # one reduce each
    unsure = torch.tensor([1.0, -1.0, -2.0, 0.5])  # r_t = 0
    for _ in range(5):
        controller.observe(unsure)
        controller.adjust(images_since=100, reduce_sum=reduce_sum)
    assert controller.metrics()["aug/rt"].item() == 0.0
    assert controller.p.item() == 0.0  # fell by 0.1 per adjustment and stopped at 0


def _rank_adjusts(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    controller = ada.AdaptiveAugment(target=0.6, interval=1, ramp_images=100)
    # Rank 0 sees only positive logits, rank 1 three quarters positive: r_t = 0.75 together.
    logits = torch.ones(4) if rank == 0 else torch.tensor([1.0, 1.0, 1.0, -1.0])
    controller.observe(logits)
    controller.adjust(images_since=10)
    torch.save(controller.state_dict(), f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_ranks_agree_on_p_from_their_pooled_signs(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_rank_adjusts, args=(port, str(tmp_path)), nprocs=2, start_method="fork")
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for state in states:
        assert state["rt"].item() == pytest.approx(0.75)
        assert state["p"].item() == pytest.approx(0.1)


def test_ada_refuses_audio_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"train.ada_target=0.6 .* data.kind=audio") as err:
        ada.check_ada_data(0.6, "audio")
    assert "\n" not in str(err.value)
    ada.check_ada_data(0.0, "audio")
    ada.check_ada_data(0.6, "image")


def test_loading_an_audio_config_with_ada_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set train.ada_target=0 for audio"):
        load_config(None, [f"output_dir={tmp_path}", "data.kind=audio", "train.ada_target=0.6"])


def test_ada_target_out_of_range_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.ada_target"):
        load_config(None, [f"output_dir={tmp_path}", "train.ada_target=1.5"])


def ada_overrides(run_dir: Path, shards: Path, **extra: object) -> list[str]:
    return tiny_overrides(
        run_dir,
        shards,
        **{
            "tracking.wandb": False,
            "train.ada_target": 0.6,
            "train.ada_interval": 1,
            "train.ada_ramp_images": 32,  # each D step of 8 images moves p by 0.25
            "optim.d_lr": 0.01,  # a D that overfits at once
            **extra,
        },
    )


def test_training_logs_p_and_resumes_it_exactly(tmp_path: Path, glyph_shards: Path) -> None:
    straight = tmp_path / "straight"
    Trainer(load_config(None, ada_overrides(straight, glyph_shards))).train()
    rows = [r for r in rundir.read_metrics(straight) if "aug/p" in r]
    assert rows and {"aug/p", "aug/rt"} <= rows[-1].keys()
    final = torch.load(
        rundir.latest_checkpoint(straight) / checkpoint.SHARED_FILE, weights_only=True
    )["ada"]
    assert 0.0 < final["p"].item() <= 1.0  # p moved from 0 with the signs of D on reals
    assert -1.0 <= final["rt"].item() <= 1.0

    resumed = tmp_path / "resumed"
    first = rundir.checkpoint_dir(straight, 2)
    trainer = Trainer(load_config(None, ada_overrides(resumed, glyph_shards, resume=first)))
    algorithm, seen = trainer.algorithm, []
    loss = algorithm.loss

    def record(phase, batch):  # p as the first resumed D step finds it
        seen.append(algorithm.ada.p.item())
        return loss(phase, batch)

    algorithm.loss = record  # type: ignore[method-assign]
    trainer.train()
    saved = torch.load(first / checkpoint.SHARED_FILE, weights_only=True)["ada"]
    assert seen[0] == saved["p"].item() > 0
    again = algorithm.ada.state_dict()
    assert torch.equal(again["p"], final["p"]) and torch.equal(again["rt"], final["rt"])
