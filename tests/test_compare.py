"""`gandist compare`: two real short runs that differ in one setting, read from their run
directories alone: the table, the curves PNG, globs and a sweep's folder, and the HTML page
as headless Chromium renders it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gandist import cli
from gandist.metrics.domain import ImageClassifier, save_classifier
from gandist.metrics.extractors import DOMAIN
from gandist.runs.compare import PALETTE, find_runs, left_out, load_run, shared_curves
from gandist.training.config import load_config
from gandist.training.trainer import Trainer
from tests.conftest import tiny_overrides

D_LRS = {"lr-small": 2e-4, "lr-large": 2e-3}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, glyph_shards: Path) -> Path:
    """A sweep's folder: two 6-step runs, evaluated every 2 steps, that differ in optim.d_lr."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    tmp = tmp_path_factory.mktemp("sweep")
    torch.manual_seed(3)
    extractor = save_classifier(
        ImageClassifier(channels=3, resolution=32, num_classes=10, width=8), tmp / "x.pt"
    )
    for name, d_lr in D_LRS.items():
        overrides = tiny_overrides(
            tmp / "sweep" / name, glyph_shards,
            **{
                "tracking.wandb": False, "optim.d_lr": d_lr, "train.steps": 6,
                "tracking.group": "sweep", "tracking.notes": name,  # names, not settings
                "eval.every": 2, "eval.num_samples": 32, "eval.num_real": 32,
                "eval.batch_size": 16, "eval.extractor": DOMAIN, "eval.weights_path": extractor,
                "eval.cache_dir": tmp / "cache", "eval.kid_subset_size": 16,
                "eval.kid_subsets": 2, "eval.max_share": 1.0,
            },
        )  # fmt: skip
        Trainer(load_config(None, overrides)).train()
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        PartialState._reset_state()
    return tmp / "sweep"


def _table(output: str) -> tuple[list[str], dict[str, list[str]]]:
    lines = [line for line in output.splitlines() if line.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    rows = {}
    for line in lines[2:]:
        if line.startswith(("wrote ", "left out")):
            continue
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return header, rows


def test_compare_tables_the_runs_naming_only_the_key_that_differs_and_plots_each(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    png = tmp_path / "compare.png"
    runs = [str(sweep / name) for name in D_LRS]
    assert cli.main(["compare", *runs, "--out", str(png)]) == 0
    header, rows = _table(capsys.readouterr().out)
    # The only config key in the table is the one the runs differ in (run names, output
    # folders and tracking notes are not settings).
    assert [h for h in header if "." in h] == ["optim.d_lr"]
    assert set(rows) == set(D_LRS)
    for name, d_lr in D_LRS.items():
        row = dict(zip(header, rows[name], strict=True))
        assert float(row["optim.d_lr"]) == d_lr
        assert row["steps"] == "6" and row["images seen"] == "48" and row["skipped"] == "0"
        fids = [r["eval/fid"] for r in load_run(sweep / name).rows if "eval/fid" in r]
        assert len(fids) == 3
        assert float(row["final FID"]) == pytest.approx(fids[-1], rel=1e-3)
        assert float(row["best FID"]) == pytest.approx(min(fids), rel=1e-3)
        assert float(row["images/s"]) > 0 and 0 < float(row["eval share"]) < 1
        assert float(row["hours"]) > 0 and row["world size"] == "1"

    # One panel per shared curve, one colour per run: every run's colour is drawn below
    # the legend (a curve hidden under another, or missing, fails this).
    assert shared_curves([load_run(Path(r)) for r in runs]) == [
        "eval/fid", "train/d_loss", "train/g_loss",
    ]  # fmt: skip
    pixels = np.asarray(Image.open(png).convert("RGB"))[40:]
    for i in range(len(runs)):
        drawn = np.all(pixels == PALETTE[i], axis=-1).sum()
        assert drawn > 200, (i, drawn)


def test_compare_takes_a_sweep_folder_or_a_glob_and_every_axis(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert [p.name for p in find_runs([sweep])] == sorted(D_LRS)
    assert [p.name for p in find_runs([f"{sweep}/lr-*"])] == sorted(D_LRS)
    for by in ("images", "steps", "hours"):
        out = tmp_path / f"{by}.png"
        assert cli.main(["compare", str(sweep), "--by", by, "--out", str(out)]) == 0
        assert Image.open(out).size[0] > 0
    capsys.readouterr()
    assert cli.main(["compare", str(tmp_path / "nothing-here")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a run directory" in err[0]


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 4-step WaveGAN run (WGAN-GP, no evaluation) on synthetic tones."""
    tmp = tmp_path_factory.mktemp("audio")
    tones = tmp / "tones"
    synth = ["data", "synth", "tones", "--out", str(tones), "--num", "8", "--shard-size", "4"]
    assert cli.main([*synth, "--workers", "1", "--quiet"]) == 0
    overrides = [
        f"output_dir={tmp / 'tones-run'}", f"data.shards={tones}", "data.num_workers=0",
        "data.shuffle_buffer=4", "model.latent_dim=8", "model.g_width=2", "model.d_width=2",
        "train.batch_size=4", "train.n_critic=1", "train.steps=4", "train.log_every=2",
        "train.sample_every=4", "train.checkpoint_every=4", "train.num_samples=2",
        "train.progress_bar=false", "tracking.wandb=false",
    ]  # fmt: skip
    Trainer(load_config("configs/wavegan.yaml", overrides)).train()
    return tmp / "tones-run"


def test_an_image_run_and_an_audio_run_compare_on_what_both_logged_and_name_the_rest(
    sweep: Path, audio_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    image_run = sweep / "lr-small"
    png, page = tmp_path / "mixed.png", tmp_path / "mixed.html"
    argv = ["compare", str(image_run), str(audio_run), "--out", str(png), "--html", str(page)]
    assert cli.main(argv) == 0
    output = capsys.readouterr().out
    header, rows = _table(output)
    image, audio = (
        dict(zip(header, rows[name], strict=True)) for name in ("lr-small", "tones-run")
    )
    assert (image["family"], image["kind"], audio["family"], audio["kind"]) == (
        "dcgan", "image", "wavegan", "audio",
    )  # fmt: skip
    # Only the image run evaluated: no FID or evaluation-share column for one run alone.
    assert not {"final FID", "best FID", "eval share"} & set(header)
    assert (image["steps"], audio["steps"]) == ("6", "4")
    assert (image["images seen"], audio["images seen"]) == ("48", "16")
    assert "data.kind" in header and "model.name" in header

    runs = [load_run(image_run), load_run(audio_run)]
    assert shared_curves(runs) == ["train/d_loss", "train/g_loss"]
    (note,) = [line for line in output.splitlines() if line.startswith("left out")]
    assert note.startswith("left out, not logged by every run: ")
    only_image, only_audio = (
        {k for k, names in left_out(runs).items() if names == [name]}
        for name in ("lr-small", "tones-run")
    )
    assert {"eval/fid", "eval/kid"} <= only_image and "train/gp" in only_audio
    assert "train/d_loss" not in only_image | only_audio
    assert f"{', '.join(sorted(only_audio))} (only tones-run)" in note
    assert "eval/fid" in note.split("(only lr-small)")[0]
    pixels = np.asarray(Image.open(png).convert("RGB"))[40:]
    assert all(np.all(pixels == PALETTE[i], axis=-1).sum() > 100 for i in range(2))
    # The page names what was left out and has a player per clip of the audio run.
    text = page.read_text()
    assert "train/gp" in text.split("id='left-out'>")[1].split("</p>")[0]
    clips = sorted(p.relative_to(audio_run) for p in audio_run.glob("samples/step-*/clip-*.wav"))
    assert [str(p) for p in clips] == [f"samples/step-00000004/clip-00{i}.wav" for i in (0, 1)]
    assert text.count("<audio controls src='data:audio/wav;base64,") == 2


BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def chromium() -> str:
    """A headless Chromium: Debian's chromium-headless-shell, installed when missing on a root
    Debian shell. `GANDIST_REQUIRE_CHROMIUM=1` (set in .ci/run) makes a missing one a failure."""
    found = next(filter(None, map(shutil.which, BROWSERS)), None)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", BROWSERS[0]],
        ):
            subprocess.run(command, env=env, capture_output=True, timeout=900)
        found = shutil.which(BROWSERS[0])
    if found is None:
        if os.environ.get("GANDIST_REQUIRE_CHROMIUM") == "1":
            pytest.fail("GANDIST_REQUIRE_CHROMIUM=1 but no headless Chromium could be installed")
        pytest.skip("needs a headless Chromium (Debian: apt-get install chromium-headless-shell)")
    return found


def test_html_page_renders_the_table_curves_and_grids_in_headless_chromium(
    sweep: Path, tmp_path: Path, chromium: str
) -> None:
    page = tmp_path / "report.html"
    assert (
        cli.main(["compare", str(sweep), "--out", str(tmp_path / "c.png"), "--html", str(page)])
        == 0
    )
    (tmp_path / "c.png").unlink()  # the page needs nothing beside it
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count("<tr>") == 1 + len(D_LRS)  # header and one row per run
    for name in D_LRS:
        assert f"<td>{name}</td>" in dom and f"<h2>{name}</h2>" in dom
    # Each run wrote grids at steps 2, 4 and 6; all are on the page, inlined.
    assert len(re.findall(r"<img class=\"grid\"[^>]+src=\"data:image/png;base64,", dom)) == 6
    assert 'id="curves"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*browser, f"--screenshot={shot}", "--window-size=1000,1600", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    # The curves image was decoded and drawn: both runs' colours are on screen (within a
    # few levels: the browser may colour-manage images).
    for i in range(len(D_LRS)):
        near = np.abs(pixels.astype(int) - PALETTE[i]).max(axis=-1) <= 8
        assert near.sum() > 100, i
