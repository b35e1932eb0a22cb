"""What a run leaves for its users: the wandb record (axes, summaries, config and facts, grids),
sample grids of the EMA, the raw generator and each class, plain progress lines in a log, and
an export that loads without gandist."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import json_format
from PIL import Image

from gandist import cli, rundir
from gandist.metrics.domain import ImageClassifier, save_classifier
from gandist.metrics.extractors import DOMAIN
from gandist.training.progress import ProgressReport
from tests import wandb_log
from tests.conftest import ROOT, subprocess_env, tiny_overrides

SLURM = {"SLURM_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_NODELIST": "gpu[01-02]"}
TRACKING = {
    "tracking.wandb": True, "tracking.name": "glyphs-ema", "tracking.group": "sweep-7",
    "tracking.tags": "[ablation,glyphs]", "tracking.job_type": "ablation",
    "tracking.notes": "'EMA against raw'",
}  # fmt: skip


@pytest.fixture(scope="module")
def random_extractor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained domain classifier: FID values are arbitrary but real computations."""
    torch.manual_seed(3)
    model = ImageClassifier(channels=3, resolution=32, num_classes=10, width=8)
    return save_classifier(model, tmp_path_factory.mktemp("extractor") / "extractor.pt")


def eval_overrides(extractor: Path, cache: Path) -> dict[str, object]:
    return {
        "eval.every": 2, "eval.num_samples": 32, "eval.num_real": 32, "eval.batch_size": 16,
        "eval.extractor": DOMAIN, "eval.weights_path": extractor, "eval.cache_dir": cache,
        "eval.kid_subset_size": 16, "eval.kid_subsets": 2, "eval.max_share": 1.0,
    }  # fmt: skip


@pytest.fixture(scope="module")
def conditional_run(
    tmp_path_factory: pytest.TempPathFactory, glyph_shards: Path, random_extractor: Path
) -> tuple[Path, subprocess.CompletedProcess]:
    """A 4-step class-conditional run with an EMA, evaluation, wandb (offline) and the
    environment of a Slurm array task, launched as a user would, output to a pipe."""
    tmp = tmp_path_factory.mktemp("conditional")
    run_dir = tmp / "run"
    overrides = tiny_overrides(
        run_dir, glyph_shards,
        **{
            "model.num_classes": 10, "train.ema_half_life_images": 64,
            "train.progress_bar": True, "train.progress_every_s": 3600,
            **TRACKING, **eval_overrides(random_extractor, tmp / "cache"),
        },
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "gandist.cli", "train", "configs/conditional.yaml", *overrides],
        cwd=ROOT, env=subprocess_env() | SLURM, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-6000:]
    return run_dir, result


def _wandb_records(run_dir: Path) -> dict[str, list]:
    run_file = wandb_log.run_file(run_dir)
    wandb_log.wait_for_step(run_dir, 4)
    found: dict[str, list] = {}
    for record in wandb_log.records(run_file):
        kind = record.WhichOneof("record_type")
        found.setdefault(kind, []).append(json_format.MessageToDict(getattr(record, kind)))
    return found


def _items(updates: list[dict]) -> dict[str, object]:
    """Config or summary update records merged into {key: value}, nested keys joined by '/'."""
    merged: dict[str, object] = {}
    for update in updates:
        for item in update.get("update", []):
            key = item.get("key") or "/".join(item["nestedKey"])
            merged[key] = json.loads(item["valueJson"])
    return merged


def test_wandb_record_has_the_axes_summaries_config_facts_and_names(
    conditional_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    run_dir, _ = conditional_run
    records = _wandb_records(run_dir)
    metrics = records["metric"]
    # Images seen and hours are axes; every train/eval/perf key is plotted against images.
    defined = {m["name"] for m in metrics if "name" in m}
    assert {"train/images_seen", "train/hours"} <= defined
    globs = {m["globName"]: m.get("stepMetric") for m in metrics if "globName" in m}
    for prefix in ("train/*", "eval/*", "perf/*"):
        assert globs[prefix] == "train/images_seen", prefix
    summaries = {m["name"]: set(m.get("summary", {})) for m in metrics if "name" in m}
    assert summaries["eval/fid"] == {"min"}
    assert summaries["train/d_loss"] == summaries["train/g_loss"] == {"last"}

    history = wandb_log.history(wandb_log.run_file(run_dir))
    fids = [row["eval/fid"] for row in history if "eval/fid" in row]
    assert len(fids) == 2
    summary = _items(records["summary"])
    assert summary["eval/fid"] == {"min": min(fids)}

    # The names and grouping from the tracking section.
    run = records["run"][0]
    assert run["displayName"] == "glyphs-ema" and run["runGroup"] == "sweep-7"
    assert run["jobType"] == "ablation" and run["notes"] == "EMA against raw"
    assert run["tags"] == ["ablation", "glyphs"]

    # The whole resolved config, and the run's facts with the Slurm job's.
    config = _items(records["config"])
    assert config["model"]["num_classes"] == 10 and config["train"]["ema_half_life_images"] == 64
    facts = config["run"]
    assert facts["world_size"] == 1 and facts["precision"] == "fp32" and facts["device"] == "cpu"
    assert facts["slurm_job_id"] == "4242" and facts["slurm_array_task_id"] == "3"
    assert facts["slurm_nodelist"] == "gpu[01-02]"
    assert facts["torch"] == torch.__version__ and "gandist" in facts
    assert json.loads((run_dir / rundir.RUN_INFO_FILE).read_text())["slurm_job_id"] == "4242"


def test_every_log_step_carries_throughput_timing_grad_norms_and_hours(
    conditional_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    run_dir, _ = conditional_run
    rows = [r for r in rundir.read_metrics(run_dir) if "train/d_loss" in r]
    assert [r["step"] for r in rows] == [2, 4]
    for row in rows:
        for key in ("train/d_grad_norm", "train/g_grad_norm", "perf/images_per_s",
                    "perf/step_time_s", "train/lr_g", "train/lr_d", "train/real_logit",
                    "train/fake_logit", "train/skipped_steps"):  # fmt: skip
            assert math.isfinite(row[key]), key
        assert row["train/d_grad_norm"] > 0 and row["train/g_grad_norm"] > 0
        assert 0 <= row["perf/data_wait_share"] <= 1
        assert row["perf/step_time_s"] > 0
    assert 0 < rows[0]["train/hours"] < rows[1]["train/hours"] < 1
    assert "perf/peak_memory_gib" not in rows[0]  # only on GPUs


def test_sample_grids_of_the_ema_the_raw_generator_and_each_class(
    conditional_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    run_dir, _ = conditional_run
    names = ["samples", "samples_raw", *(f"samples_class_{k}" for k in range(10))]
    grids = {}
    for name in names:
        written = rundir.sample_grids(run_dir, name)
        assert [step for step, _ in written] == [2, 4], name
        grids[name] = np.asarray(Image.open(written[-1][1])).astype(float)
    assert grids["samples"].shape == grids["samples_raw"].shape
    assert not np.array_equal(grids["samples"], grids["samples_raw"])  # the EMA is not G
    assert not np.array_equal(grids["samples_class_0"], grids["samples_class_1"])
    assert all(grid.std() > 1 for grid in grids.values())  # pictures, not blanks
    # wandb got each grid under its name at both sample steps.
    history = wandb_log.history(wandb_log.run_file(run_dir))
    for name in names:
        assert [r["_step"] for r in history if f"{name}/filenames" in r] == [2, 4], name


def test_progress_is_plain_lines_when_output_is_not_a_terminal(
    conditional_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    _, result = conditional_run
    output = result.stdout + result.stderr
    assert "\r" not in output  # no carriage-return redraws in a log file
    lines = [line for line in output.splitlines() if line.startswith("step ")]
    # The first step, then (progress_every_s is an hour) only the last.
    assert [line.split()[1] for line in lines] == ["1/4", "4/4"], lines
    assert "d_loss" in lines[-1] and "elapsed" in lines[-1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_report_draws_a_bar_on_a_terminal_and_timed_lines_elsewhere() -> None:
    terminal = _Terminal()
    with ProgressReport(10, 0, enabled=True, stream=terminal) as report:
        for step in range(1, 11):
            report.update(step, {"train/d_loss": 0.5} if step % 5 == 0 else None)
    assert "\r" in terminal.getvalue() and "d_loss=0.500" in terminal.getvalue()

    log = io.StringIO()
    report = ProgressReport(10, 0, enabled=True, every_s=0, stream=log)
    for step in range(1, 11):
        report.update(step)
    assert [line.split()[1] for line in log.getvalue().splitlines()] == [
        f"{s}/10" for s in range(1, 11)
    ]
    resumed = io.StringIO()
    report = ProgressReport(10, 6, enabled=True, every_s=3600, stream=resumed)
    for step in range(7, 11):
        report.update(step)
    assert [line.split()[1] for line in resumed.getvalue().splitlines()] == ["7/10", "10/10"]

    quiet = io.StringIO()
    report = ProgressReport(10, 0, enabled=False, stream=quiet)
    report.update(10)
    assert quiet.getvalue() == ""


# ---- export -----------------------------------------------------------------------------

NO_GANDIST = """
import sys, json
sys.modules["gandist"] = None  # an import of gandist now fails: the program must not need it
import torch
folder, latents, labels = sys.argv[1], sys.argv[2], sys.argv[3]
latents, labels = torch.load(latents), torch.load(labels)
program = torch.export.load(folder + "/generator.pt2").module()
torch.save(program(latents, labels), folder + "/from_program.pt")
print(json.dumps(sorted(m for m, v in sys.modules.items() if m.startswith("gandist") and v)))
"""


@pytest.mark.slow
def test_export_round_trip_gives_the_same_images_everywhere(
    conditional_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    from gandist.runs.export import Generator
    from gandist.runs.sample import load_generator

    run_dir, _ = conditional_run
    out = tmp_path / "export"
    assert cli.main(["export", str(run_dir), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {
        "model.safetensors", "config.json", "README.md", "generator.pt2",
    }  # fmt: skip
    card = (out / "README.md").read_text()
    assert "library_name: gandist" in card and "torch.export.load" in card

    latents = torch.randn(6, 16, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([0, 1, 2, 7, 8, 9])
    checkpoint_generator, _ = load_generator(run_dir)  # the newest checkpoint's EMA
    with torch.no_grad():
        expected = checkpoint_generator(latents, labels)
        from_mixin = Generator.from_pretrained(out).eval()(latents, labels)
    torch.testing.assert_close(from_mixin, expected, rtol=0, atol=0)

    torch.save(latents, tmp_path / "latents.pt")
    torch.save(labels, tmp_path / "labels.pt")
    env = subprocess_env()
    env.pop("PYTHONPATH")
    result = subprocess.run(
        [sys.executable, "-c", NO_GANDIST, str(out), str(tmp_path / "latents.pt"),
         str(tmp_path / "labels.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []
    from_program = torch.load(out / "from_program.pt")
    torch.testing.assert_close(from_program, expected, rtol=1e-5, atol=1e-5)


def test_export_raw_holds_the_trained_generator_not_the_ema(
    conditional_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    from gandist.checkpoint import SHARED_FILE
    from gandist.runs.export import Generator, export_generator

    run_dir, _ = conditional_run
    raw = Generator.from_pretrained(export_generator(run_dir, tmp_path / "raw", raw=True))
    ema = Generator.from_pretrained(export_generator(run_dir, tmp_path / "ema"))
    trained = torch.load(rundir.latest_checkpoint(run_dir) / SHARED_FILE, weights_only=True)[
        "network/generator"
    ]
    for name, value in raw.generator.state_dict().items():
        assert torch.equal(value, trained[name]), name
    differs = [
        name
        for name, value in ema.generator.state_dict().items()
        if value.is_floating_point() and not torch.equal(value, trained[name])
    ]
    assert differs  # the default export is the EMA


def test_export_of_something_that_is_not_a_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert cli.main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"gandist: error: {tmp_path / 'nope'} does not exist"
    ]
