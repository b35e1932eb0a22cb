"""`bash launch/demo.sh` end to end, shortened, in a clean clone: setup, shards, extractor, a
one-process training run (no CUDA) with evaluation, its final scores and the outputs it names.
Slow (see docs/testing.md)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT

# What launch/setup.sh records in $GANDIST_VENV/.gandist-install for an up-to-date venv.
STAMPED_FILES = ("pyproject.toml", "launch/constraints.txt")

# The demo's own settings, shortened: 20 steps of its config, evaluated at steps 10 and 20
# (at 20 steps evaluation is most of the wall time: eval.max_share=1 lets both run).
SHORT = [
    "train.steps=20", "train.log_every=10", "train.sample_every=10",
    "train.checkpoint_every=10", "eval.every=10", "eval.num_samples=200", "eval.num_real=200",
    "eval.max_share=1.0",
]  # fmt: skip


def _shim_venv(clone: Path, venv: Path) -> None:
    """A venv folder whose python and gandist are this interpreter running the clone's code,
    stamped up to date, so setup.sh installs nothing and the demo runs the clone."""
    (venv / "bin").mkdir(parents=True)
    for name, args in (("python", ""), ("gandist", " -m gandist.cli")):
        script = venv / "bin" / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}"{args} "$@"\n')
        script.chmod(0o755)
    digest = hashlib.sha256(b"".join((clone / f).read_bytes() for f in STAMPED_FILES))
    (venv / ".gandist-install").write_text(f"{digest.hexdigest()[:16]} .\n")


@pytest.mark.slow
@pytest.mark.dist
def test_demo_script_trains_evaluates_and_names_its_outputs_in_a_clean_clone(
    tmp_path: Path,
) -> None:
    clone, venv = tmp_path / "gandist", tmp_path / "venv"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    _shim_venv(clone, venv)
    env = dict(os.environ, GANDIST_VENV=str(venv), PYTHONPATH=str(clone), OMP_NUM_THREADS="1")
    env |= {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "XDG_CACHE_HOME": str(tmp_path)}
    env["GANDIST_DEMO_GLYPHS"] = "2000"  # writing 20,000 takes a minute of the test's two
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(
        ["bash", "launch/demo.sh", *SHORT, f"eval.cache_dir={tmp_path / 'cache'}"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}"
    assert f"gandist setup: {venv} is up to date" in result.stdout
    assert "gandist demo finished" in result.stdout

    (run_dir,) = (clone / "runs").glob("demo-*")
    assert f"Outputs in runs/{run_dir.name}/" in result.stdout
    # One process on a machine without CUDA: faster than 2 gloo ranks on 2 cores.
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 1
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval/fid" in row]
    assert [row["step"] for row in evals] == [10, 20]
    assert all(math.isfinite(row["eval/fid"]) and row["eval/fid"] >= 0 for row in evals)
    assert all(0 <= row["eval/class_coverage"] <= 1 for row in evals)
    final = re.search(
        r"final evaluation at step 20: domain FID ([0-9.]+), class coverage", result.stdout
    )
    assert final and float(final.group(1)) == round(evals[-1]["eval/fid"], 1)
    grid = np.asarray(Image.open(run_dir / "samples" / "step-00000020.png"))
    assert grid.std() > 5, "the newest grid is (nearly) constant"
    assert re.search(r"newest: runs/demo-[0-9-]+/samples/step-00000020\.png", result.stdout)

    # The commands it prints work as printed.
    sample = re.search(r"Draw new samples: +(.+)", result.stdout).group(1).split()
    subprocess.run(sample, cwd=clone, env=env, check=True, capture_output=True, timeout=120)
    assert Image.open(clone / "grid.png").size[0] > 8 * 32
