"""What the Trainer does with its config, checked on what it produces: DiffAugment in front of
D, D(real)/D(fake) logged from D's own outputs, checkpoint pruning beyond the limit next to a
kept best, step-based evaluation, images_seen under n_critic, run.json, `--num-processes auto`,
resuming with another worker or rank count, and the stop-check benchmark."""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import sys
from pathlib import Path

import pytest
import torch

import gandist
from gandist import rundir
from gandist.metrics.extractors import DOMAIN
from gandist.training.config import load_config
from gandist.training.trainer import Trainer
from tests.conftest import gandist_cli, run, tiny_overrides
from tests.test_metrics import random_extractor  # noqa: F401 - a fixture

SHIFT = 4  # DiffAugment translation: up to 1/8 of 32 px


def _overrides(run_dir: Path, shards: Path, **extra: object) -> list[str]:
    return tiny_overrides(run_dir, shards, **{"tracking.wandb": False, **extra})


def _real_batch(batch_size: int = 8) -> dict[str, torch.Tensor]:
    images = torch.rand(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return {"image": images * 2 - 1}


def _record_inputs(module: torch.nn.Module) -> list[torch.Tensor]:
    inputs: list[torch.Tensor] = []
    module.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
    return inputs


def _record_outputs(module: torch.nn.Module) -> list[torch.Tensor]:
    outputs: list[torch.Tensor] = []
    module.register_forward_hook(lambda _m, _a, out: outputs.append(out.detach().clone()))
    return outputs


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """image [C, H, W] read at (y + dy, x + dx), zero outside: DiffAugment's translation."""
    height, width = image.shape[1:]
    out = torch.zeros_like(image)
    ys, xs = (
        slice(max(0, -dy), min(height, height - dy)),
        slice(max(0, -dx), min(width, width - dx)),
    )
    sy, sx = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
    out[:, ys, xs] = image[:, sy, sx]
    return out


def _translations(seen: torch.Tensor, source: torch.Tensor) -> list[tuple[int, int]]:
    """For each image, the translation that turns `source` into what D `seen`; fails if none."""
    shifts = []
    for index, (image, original) in enumerate(zip(seen, source, strict=True)):
        found = [
            (dy, dx)
            for dy, dx in itertools.product(range(-SHIFT, SHIFT + 1), repeat=2)
            if torch.equal(image, _shifted(original, dy, dx))
        ]
        assert found, f"image {index}: D saw no translation of it"
        shifts.append(found[0])
    return shifts


@pytest.mark.parametrize("augment", ["translation", ""])
def test_trainer_puts_diffaugment_between_every_image_and_d(
    tmp_path: Path, glyph_shards: Path, augment: str
) -> None:
    cfg = load_config(
        None, _overrides(tmp_path / "run", glyph_shards, **{"train.augment": augment})
    )
    real = _real_batch()
    trainer = Trainer(cfg, batches=itertools.repeat(real))
    d_inputs = _record_inputs(trainer.algorithm.local("discriminator"))
    fakes = _record_outputs(trainer.algorithm.local("generator"))
    d_phase, g_phase = trainer.algorithm.phases(0)
    trainer.run_phase(d_phase)
    trainer.run_phase(g_phase)
    # D phase: reals, then G's fakes; G phase: G's fakes.
    pairs = [(d_inputs[0], real["image"]), (d_inputs[1], fakes[0]), (d_inputs[2], fakes[1])]
    assert len(d_inputs) == len(pairs) and len(fakes) == 2
    for seen, source in pairs:
        shifts = _translations(seen, source)
        if augment:  # 8 images at (0, 0) out of 81 shifts each: (1/81)^8
            assert any(shift != (0, 0) for shift in shifts), "D saw the images unaugmented"
            assert len(set(shifts)) > 1, "one shift for the whole batch"
        else:
            assert set(shifts) == {(0, 0)}


@pytest.mark.parametrize(
    ("loss", "probabilities"),
    [("nonsaturating", True), ("hinge", False), ("least_squares", False), ("wasserstein", False)],
)
def test_d_real_and_d_fake_are_logged_from_ds_outputs_on_each_side(
    tmp_path: Path, glyph_shards: Path, loss: str, probabilities: bool
) -> None:
    run_dir = tmp_path / "run"
    extra = {"train.loss": loss, "train.steps": 1, "train.log_every": 1}
    real = _real_batch()
    trainer = Trainer(
        load_config(None, _overrides(run_dir, glyph_shards, **extra)),
        batches=itertools.repeat(real),
    )
    discriminator = trainer.algorithm.local("discriminator")
    inputs, logits = _record_inputs(discriminator), _record_outputs(discriminator)
    trainer.train()
    # The D phase's two calls: one on the reals, one on G's fakes (the third is the G phase).
    (real_call,) = [i for i in (0, 1) if torch.equal(inputs[i], real["image"])]
    real_logits, fake_logits = logits[real_call], logits[1 - real_call]
    (row,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert row["train/real_logit"] == pytest.approx(float(real_logits.mean()), rel=1e-5)
    assert row["train/fake_logit"] == pytest.approx(float(fake_logits.mean()), rel=1e-5)
    if probabilities:
        assert row["train/d_real"] == pytest.approx(float(real_logits.sigmoid().mean()), rel=1e-5)
        assert row["train/d_fake"] == pytest.approx(float(fake_logits.sigmoid().mean()), rel=1e-5)
        assert row["train/d_real"] != row["train/d_fake"]
    else:  # scores, not log-odds: no probability is logged
        assert "train/d_real" not in row and "train/d_fake" not in row


def test_step_based_evaluation_prunes_beyond_the_limit_and_keeps_the_best(
    tmp_path: Path,
    glyph_shards: Path,
    random_extractor: Path,  # noqa: F811
) -> None:
    run_dir = tmp_path / "run"
    overrides = _overrides(
        run_dir, glyph_shards,
        **{
            "train.steps": 5, "train.checkpoint_every": 1, "train.checkpoints_total_limit": 2,
            "eval.every": 2, "eval.num_samples": 32, "eval.num_real": 32, "eval.batch_size": 16,
            "eval.extractor": DOMAIN, "eval.weights_path": random_extractor,
            "eval.cache_dir": tmp_path / "cache", "eval.kid_subset_size": 16,
            "eval.kid_subsets": 4, "eval.max_share": 1.0,
        },
    )  # fmt: skip
    Trainer(load_config(None, overrides)).train()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval/fid" in row]
    assert [row["step"] for row in evals] == [2, 4, 5]  # every 2 steps, and the last
    assert all(math.isfinite(row["eval/fid"]) for row in evals)
    best_step = min(evals, key=lambda row: row["eval/fid"])["step"]
    assert rundir.best_checkpoint(run_dir).name == f"step-{best_step:08d}"
    # Five checkpoints written, one per step: the newest two stay, and the best.
    kept = {int(p.name[5:]) for p in (run_dir / "checkpoints").iterdir()}
    assert kept == {4, 5, best_step}
    assert all((run_dir / "checkpoints" / f"step-{s:08d}" / "COMPLETE").is_file() for s in kept)


def test_images_seen_counts_every_critic_batch_over_n_critic_phases(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    extra = {
        "train.n_critic": 3,
        "train.steps": 2,
        "train.log_every": 1,
        "train.loss": "wasserstein",
    }
    trainer = Trainer(load_config("configs/wgan.yaml", _overrides(run_dir, glyph_shards, **extra)))
    drawn = []
    next_batch = trainer.data.next_batch
    trainer.data.next_batch = lambda: drawn.append(1) or next_batch()  # type: ignore[method-assign]
    trainer.train()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(drawn) == 2 * 3  # a fresh real batch for each D phase
    assert [row["train/images_seen"] for row in rows] == [8 * 3, 8 * 3 * 2]


def test_resuming_with_another_worker_count_warns_once_naming_both_and_trains_on(
    tmp_path: Path, glyph_shards: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    Trainer(load_config(None, _overrides(run_dir, glyph_shards, **{"train.steps": 2}))).train()
    caplog.set_level(logging.WARNING, logger="gandist.data.loader")
    # 0 workers read like 1 (the same positions); 2 do not.
    extra = {"resume": "latest", "data.num_workers": 2}
    assert Trainer(load_config(None, _overrides(run_dir, glyph_shards, **extra))).train().step == 4
    changed = [r.getMessage() for r in caplog.records if "data stream was saved" in r.getMessage()]
    assert changed == [
        "the data stream was saved with 1 rank x 0 workers, now 1 rank x 2 workers: it restarts "
        "in a fresh order (samples may repeat within this epoch)"
    ]


def test_num_processes_auto_resumes_a_one_rank_run_on_two_ranks_and_writes_run_json(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    Trainer(load_config(None, _overrides(run_dir, glyph_shards, **{"train.steps": 2}))).train()
    first = json.loads((run_dir / "run.json").read_text())
    assert (first["world_size"], first["resumed_at_step"]) == (1, 0)
    result = gandist_cli(
        "train", "configs/dcgan.yaml", "--num-processes", "auto",
        *_overrides(run_dir, glyph_shards, **{"resume": "latest"}),
    )  # fmt: skip
    # Rank 0 alone says that the stream's positions do not fit two ranks.
    output = result.stdout + result.stderr
    assert output.count("the data stream was saved with") == 1
    assert "saved with 1 rank x 0 workers, now 2 ranks x 0 workers" in output
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [2, 4]
    assert rows[-1]["train/images_seen"] == 4 * 8
    info = json.loads((run_dir / "run.json").read_text())
    assert info.pop("device").split(":")[0] == "cpu"  # Accelerate names rank 0's "cpu:0"
    # main adds data_shards, git_commit and Slurm facts: those are checked where they are made.
    expected = {
        "world_size": 2,  # auto on a machine without CUDA: 2 gloo ranks
        "distributed_type": "DistributedType.MULTI_CPU",
        "mixed_precision": "auto",
        "precision": "fp32",
        "batch_per_rank": 4,
        "resumed_at_step": 2,
        "gandist": gandist.__version__,
        "torch": torch.__version__,
    }
    assert {key: info.get(key) for key in expected} == expected


def test_stop_check_benchmark_times_the_three_intervals_on_two_ranks() -> None:
    tiny = ["train.batch_size=4", "model.latent_dim=8", "model.g_width=4", "model.d_width=4"]
    result = run(
        [sys.executable, "-m", "gandist.bench.stop_check", "configs/mlp.yaml", *tiny,
         "--steps", "2", "--rounds", "1"],
        timeout=120,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("stop check: 2 ranks, DistributedType.MULTI_CPU, mlp") for line in lines
    )
    timed = {
        m["name"].strip(): (float(m["ms"]), float(m["ratio"]))
        for m in (
            re.match(r"\s+check (?P<name>.+?)\s+(?P<ms>[\d.]+) ms/step\s+x(?P<ratio>[\d.]+)", line)
            for line in lines
        )
        if m
    }
    assert set(timed) == {"never", "every 10 steps", "every step"}, lines
    assert timed["never"][1] == 1.0
    for ms, ratio in timed.values():
        assert ms > 0 and ratio == pytest.approx(ms / timed["never"][0], abs=0.002)
    (alone,) = [line for line in lines if "one check alone" in line]
    assert float(alone.split()[3]) > 0
