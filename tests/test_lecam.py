"""LeCam regularisation: the penalty by hand, its anchors' moving averages, and a training run
that logs it and checkpoints the anchors per rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gandist import checkpoint, rundir
from gandist.ema import LogitAnchors
from gandist.errors import ConfigError
from gandist.losses import lecam_penalty
from gandist.training.config import load_config
from gandist.training.trainer import Trainer
from tests.conftest import tiny_overrides


def test_lecam_penalty_by_hand() -> None:
    real = torch.tensor([2.0, -1.0], requires_grad=True)
    fake = torch.tensor([0.0, 1.0], requires_grad=True)
    penalty, metrics = lecam_penalty(real, fake, torch.tensor(0.5), torch.tensor(0.0))
    # reals beyond a_F=0: (2-0)^2, 0 -> mean 2; fakes below a_R=0.5: (0.5-0)^2, 0 -> mean 0.125
    assert penalty.item() == pytest.approx(2.125)
    assert metrics["lecam"].item() == pytest.approx(2.125)
    penalty.backward()
    assert real.grad.tolist() == pytest.approx([2.0, 0.0])  # 2 * (2 - 0) / 2
    assert fake.grad.tolist() == pytest.approx([-0.5, 0.0])  # -2 * 0.5 / 2


def test_anchors_start_at_the_first_means_then_move_by_one_minus_decay() -> None:
    anchors = LogitAnchors(decay=0.9)
    anchors.update(torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 0.0]))
    assert (anchors.real.item(), anchors.fake.item()) == (2.0, -1.0)
    anchors.update(torch.tensor([12.0]), torch.tensor([19.0]))
    assert anchors.real.item() == pytest.approx(0.9 * 2 + 0.1 * 12)
    assert anchors.fake.item() == pytest.approx(0.9 * -1 + 0.1 * 19)
    restored = LogitAnchors(decay=0.9)
    restored.load_state_dict(anchors.state_dict())
    assert torch.equal(restored.values, anchors.values) and bool(restored.started)


def test_lecam_decay_out_of_range_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="reg.lecam_decay"):
        load_config(None, [f"output_dir={tmp_path}", "reg.lecam_decay=1.0"])


def test_training_logs_lecam_and_resumes_its_anchors(tmp_path: Path, glyph_shards: Path) -> None:
    extra = {"tracking.wandb": False, "reg.lecam_weight": 0.3}
    run_dir = tmp_path / "run"
    Trainer(load_config(None, tiny_overrides(run_dir, glyph_shards, **extra))).train()
    rows = [r for r in rundir.read_metrics(run_dir) if "train/lecam" in r]
    assert rows and all(r["train/lecam"] >= 0 for r in rows)
    first = rundir.checkpoint_dir(run_dir, 2)
    saved = torch.load(first / checkpoint.rank_file(0), weights_only=True)["lecam"]
    assert bool(saved["started"]) and saved["values"].abs().sum() > 0

    resumed = Trainer(
        load_config(None, tiny_overrides(tmp_path / "again", glyph_shards, **extra, resume=first))
    )
    algorithm, seen = resumed.algorithm, []
    loss = algorithm.loss

    def record(phase, batch):  # the anchors as the first resumed D step finds them
        if phase.name == "d" and not seen:
            seen.append(algorithm.lecam[0].values.clone())
        return loss(phase, batch)

    algorithm.loss = record  # type: ignore[method-assign]
    resumed.train()
    assert torch.equal(seen[0], saved["values"])
