"""`gandist bench quality`: each family trained for a wall-clock budget, stopped through its stop
file, and scored in the glyph classifier's space exactly like the seeds' textbook loop."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from gandist.bench.quality import BASELINE, bench_quality
from gandist.cli import main

SCORES = ("fid", "precision", "recall", "class_coverage", "share_min", "share_max")


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
    tiny = [
        "model.latent_dim=16", "model.g_width=16", "model.d_width=16", "train.batch_size=16",
        "train.steps=100000", "data.num_workers=0", "data.shuffle_buffer=16",
    ]  # fmt: skip
    work = tmp_path / "work"
    rows = bench_quality(
        ["configs/mlp.yaml", str(broken)], tiny, budget_s=3.0, num_processes=1, work=work,
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
