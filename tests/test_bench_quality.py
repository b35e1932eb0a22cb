"""`gandist bench quality`: each family trained for a wall-clock budget, stopped through its stop
file, and scored in the glyph classifier's space exactly like the seeds' textbook loop."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

from gandist.bench.coverage import prepare
from gandist.bench.quality import (
    BASELINE,
    FIRST_STEP,
    ROOT,
    Replay,
    Scorer,
    bench_quality,
    replayed_generator,
)
from gandist.cli import main
from gandist.runs.sample import load_generator

SCORES = ("fid", "precision", "recall", "class_coverage", "share_min", "share_max")
TINY = [
    "model.latent_dim=16", "model.g_width=16", "model.d_width=16", "train.batch_size=16",
    "train.steps=100000", "data.num_workers=0", "data.shuffle_buffer=16",
]  # fmt: skip
"""Small networks, and a train.steps that a budget of seconds never reaches."""


def _children() -> list[str]:
    """Processes this test process started that are still alive."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        found += (task / "children").read_text().split()
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_bench_quality_stops_a_run_by_its_budget_and_scores_it_beside_the_seeds_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  name: no-such-family\n")
    work = tmp_path / "work"
    rows = bench_quality(
        ["configs/mlp.yaml", str(broken)], TINY, budget_s=3.0, num_processes=1, work=work,
        samples=150, json_path=tmp_path / "quality.json", glyphs=300, classifier_steps=10,
    )  # fmt: skip

    baseline, family, failed = rows
    assert baseline["family"] == BASELINE and family["family"] == "mlp"
    for row in (baseline, family):
        assert all(math.isfinite(row[key]) for key in SCORES), row
        assert 0 <= row["share_min"] <= row["share_max"] <= 1
        assert row["steps"] >= 2 and row["images_per_s"] > 0
        assert row["train_s"] >= 3.0
    # The budget, not train.steps, ended the run: through the stop file, at the step it names.
    assert family["stopped_by_budget"] and family["steps"] < family["train_steps"] == 100000
    stop_file = work / "quality-runs" / "mlp.stop"
    assert stop_file.read_text().splitlines()[-1] == f"stopped at step {family['steps']}"
    # A config that cannot start is a row that says so; the bench goes on and leaves nothing.
    assert "exited 2 before its first step" in failed["error"]
    assert _children() == []

    table = capsys.readouterr().out
    assert f"| {BASELINE} | seeds/000 (plain PyTorch) | {baseline['steps']} |" in table
    assert f"| mlp | configs/mlp.yaml | {family['steps']} |" in table
    beats = "yes" if family["fid"] < baseline["fid"] else "no"
    assert table.rstrip().splitlines()[-2].endswith(f"| {beats} |")
    saved = json.loads((tmp_path / "quality.json").read_text())
    assert saved["budget_s"] == 3.0 and saved["rows"] == json.loads(json.dumps(rows))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget-s", "0"], "--budget-s must be > 0, got 0.0"),
        (["--samples", "1"], "--samples must be >= 2, got 1"),
        (["--num-processes", "two"], "--num-processes must be a number or 'auto', got 'two'"),
        (["--configs", "configs/nope.yaml"], "--configs: no config file configs/nope.yaml"),
    ],
)
def test_bench_quality_refuses_bad_options_in_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "quality", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs this checkout's git history")
def test_bench_quality_before_trains_the_commits_config_with_its_code_and_scores_it_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--before COMMIT: a row per config trained by that commit's code (here HEAD's, from git
    archive, first on PYTHONPATH), scored from samples its code wrote for the Evaluator's own
    latents; those samples score exactly as the generator does in this process."""
    work = tmp_path / "work"
    rows = bench_quality(
        ["configs/mlp.yaml"], TINY, budget_s=3.0, num_processes=1, work=work, samples=150,
        glyphs=300, classifier_steps=10, skip_baseline=True, before="HEAD",
    )  # fmt: skip

    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # fmt: skip
    then, now = rows
    assert then["config"] == f"configs/mlp.yaml @ {sha[:7]}" and now["config"] == "configs/mlp.yaml"
    for row in rows:
        assert row["family"] == "mlp" and row["stopped_by_budget"], row
        assert all(math.isfinite(row[key]) for key in SCORES), row
    assert (work / f"source-{sha[:12]}" / "gandist" / "cli.py").is_file()
    assert f"| mlp | configs/mlp.yaml @ {sha[:7]} | {then['steps']} |" in capsys.readouterr().out

    # The played-back samples score like the generator itself, to the last digit.
    shards, classifier = prepare(work, 300, classifier_steps=10)
    scorer = Scorer(shards, classifier, 150, work / "cache")
    run_dir = work / "quality-runs" / "mlp"
    generator, _ = load_generator(run_dir)
    assert scorer(replayed_generator(run_dir, ROOT, 150)) == scorer(generator)


def test_replay_refuses_latents_it_did_not_sample(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    latents = torch.randn(6, 4)
    save_file({"latents": latents, "images": torch.zeros(6, 1, 2, 2)}, tmp_path / "s.safetensors", metadata={"num_classes": "0"})  # fmt: skip
    replay = Replay(tmp_path / "s.safetensors")
    assert replay.latent_dim == 4 and replay.num_classes == 0
    assert replay(latents[:3]).shape == (3, 1, 2, 2)
    with pytest.raises(RuntimeError, match="samples 3..6 were drawn for other latents"):
        replay(latents[:3])  # the first three again, where the next three are due


def test_bench_quality_before_refuses_an_unknown_commit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "quality", "--before", "no-such-commit-here"]) == 2
    assert "--before no-such-commit-here: no such commit" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "step"),
    [
        ("step 1/5000 (0.0%) | 2.1 it/s", 1),  # this checkout's plain progress line
        ("  0%|          | 1/5000 [00:02<3:01:00,  2.17s/it]", 1),  # an older checkout's tqdm
        ("  0%|          | 0/5000 [00:00<?, ?it/s]", None),  # drawn before the first step
    ],
)
def test_first_step_is_read_from_both_progress_lines(line: str, step: int | None) -> None:
    match = FIRST_STEP.search(line)
    assert (int(match[1]) if match else None) == step
