"""Every GAN family trains under 2 real gloo ranks; conditional sampling draws the asked class."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from gandist import cli
from tests.conftest import ROOT, run

FAMILIES = [
    "dcgan",
    "dcgan64",
    "conditional",
    "wgan",
    "wgan-gp",
    "sngan",
    "biggan",
    "stylegan2",
    "mlp",
]
FP16_RUNS = ["stylegan2:fp16", "wgan-gp:fp16"]  # penalties (R1, path length, GP) under fp16
RUNS = [*FAMILIES, *(spec.replace(":", "-") for spec in FP16_RUNS)]


@pytest.fixture(scope="module")
def families_run(glyph_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2-rank torchrun launch that trains every family (see tests/scripts/train_families.py)."""
    out = tmp_path_factory.mktemp("families")
    run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(ROOT / "tests/scripts/train_families.py"), str(glyph_shards), str(out),
            *FAMILIES, *FP16_RUNS,
        ],
        timeout=400,
    )  # fmt: skip
    return out


def _results(out: Path) -> dict:
    return json.loads((out / "results-rank0.json").read_text())


@pytest.mark.dist
@pytest.mark.parametrize("run_name", RUNS)
def test_family_trains_on_two_ranks_with_finite_losses(families_run: Path, run_name: str) -> None:
    steps = next(r for r in _results(families_run)["runs"] if r["run"] == run_name)["steps"]
    rows = [json.loads(line) for line in (families_run / run_name / "metrics.jsonl").open()]
    assert [row["step"] for row in rows] == list(range(1, steps + 1))
    for row in rows:
        for key in ("train/d_loss", "train/g_loss", "train/sample_diversity"):
            assert math.isfinite(row[key]), f"{run_name} step {row['step']}: {key}={row[key]}"
        assert row["train/sample_diversity"] > 0
    assert (families_run / run_name / "checkpoints" / f"step-{steps:08d}" / "COMPLETE").is_file()
    assert (families_run / run_name / "samples" / f"step-{steps:08d}.png").is_file()


@pytest.mark.dist
@pytest.mark.parametrize("run_name", RUNS)
def test_family_weights_identical_across_ranks(families_run: Path, run_name: str) -> None:
    rank0 = torch.load(families_run / run_name / "rank0.pt")
    rank1 = torch.load(families_run / run_name / "rank1.pt")
    # Training changed G and D, so equal weights are DDP's doing, not untouched initial values.
    assert rank0["moved"] == {"generator": True, "discriminator": True}
    rank0, rank1 = rank0["weights"], rank1["weights"]
    assert set(rank0) == {"generator", "discriminator", "ema"}
    for module, params in rank0.items():
        for name, value in params.items():
            assert torch.equal(value, rank1[module][name]), f"{run_name} {module}.{name} differs"
    assert rank0["generator"].keys() == rank0["ema"].keys()


@pytest.mark.dist
def test_penalties_logged_where_enabled(families_run: Path) -> None:
    def last(name: str) -> dict:
        return json.loads((families_run / name / "metrics.jsonl").read_text().splitlines()[-1])

    assert math.isfinite(last("stylegan2")["train/r1"])
    assert math.isfinite(last("stylegan2")["train/pl"])
    assert last("wgan-gp")["train/gp"] >= 0
    assert "train/ortho" in last("biggan")
    assert "train/d_grad_norm" in last("dcgan")


@pytest.mark.dist
@pytest.mark.parametrize("run_name", ["stylegan2-fp16", "wgan-gp-fp16"])
def test_fp16_generator_overflow_leaves_discriminator_loss_scale_alone(
    families_run: Path, run_name: str
) -> None:
    result = next(r for r in _results(families_run)["runs"] if r["run"] == run_name)
    assert result["g_step_skipped"], "a G step with inf gradients must be skipped"
    assert result["scales_after"]["g"] == result["scales_before"]["g"] / 2
    assert result["scales_after"]["d"] == result["scales_before"]["d"]
    rows = [json.loads(line) for line in (families_run / run_name / "metrics.jsonl").open()]
    assert {"train/g_loss_scale", "train/d_loss_scale"} <= rows[-1].keys()
    # Once the scales have backed off, the penalties computed under fp16 are finite.
    penalties = ["train/r1", "train/pl"] if run_name.startswith("stylegan2") else ["train/gp"]
    for key in penalties:
        assert math.isfinite(rows[-1][key]), f"{run_name}: {key}={rows[-1][key]}"


@pytest.mark.dist
@pytest.mark.parametrize("run_name", ["dcgan", "stylegan2-fp16"])
def test_resume_restores_ema_schedules_and_scalers(families_run: Path, run_name: str) -> None:
    result = next(r for r in _results(families_run)["runs"] if r["run"] == run_name)
    assert all(result["resume"].values()), result["resume"]
    assert ("scalers" in result["resume"]) == run_name.endswith("fp16")


@pytest.mark.dist
def test_conditional_model_refuses_batches_without_labels(families_run: Path) -> None:
    message = _results(families_run)["unlabelled_error"]
    assert "class-conditional" in message and "'cls'" in message


@pytest.mark.dist
def test_sample_class_draws_the_requested_class(families_run: Path, tmp_path: Path) -> None:
    from gandist.models import generate
    from gandist.sampling import load_generator, sample_grid
    from gandist.tracking import image_grid

    run_dir = families_run / "conditional"
    generator, cfg = load_generator(run_dir)
    latents = torch.randn(8, cfg.model.latent_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = {k: generate(generator, latents, torch.full((8,), k)) for k in (3, 4)}
    assert not torch.allclose(expected[3], expected[4]), "the label must change the images"
    grid = sample_grid(run_dir, num=8, out=tmp_path / "class3.png", seed=5, class_index=3)
    image_grid(expected[3], tmp_path / "expected3.png")
    image_grid(expected[4], tmp_path / "expected4.png")
    assert grid.read_bytes() == (tmp_path / "expected3.png").read_bytes()
    assert grid.read_bytes() != (tmp_path / "expected4.png").read_bytes()


@pytest.mark.dist
def test_sample_cli_class_option(
    families_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    conditional, out = str(families_run / "conditional"), str(tmp_path / "seven.png")
    assert cli.main(["sample", conditional, "--class", "7", "--num", "4", "--out", out]) == 0
    assert Path(out).is_file()
    assert cli.main(["sample", str(families_run / "dcgan"), "--class", "1", "--out", out]) == 2
    assert "unconditional" in capsys.readouterr().err
    assert cli.main(["sample", conditional, "--class", "10", "--out", out]) == 2
    assert "[0, 9]" in capsys.readouterr().err
