"""Config: merge order, defaults, and one clear line plus exit code 2 for every user mistake."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gandist import cli
from gandist.errors import ConfigError
from gandist.train import preflight
from gandist.training.config import load_config
from tests.conftest import run


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_merge_order_is_defaults_then_yaml_then_overrides(tmp_path: Path) -> None:
    config = write(
        tmp_path / "exp.yaml", "train:\n  steps: 10\n  batch_size: 32\nmodel:\n  name: mlp\n"
    )
    cfg = load_config(config, ["train.steps=20"])
    assert cfg.train.steps == 20  # override beats YAML
    assert cfg.train.batch_size == 32  # YAML beats default
    assert cfg.model.name == "mlp"
    assert cfg.train.log_every == 20  # untouched default
    assert cfg.run_name == "exp" and cfg.output_dir == str(Path("runs") / "exp")


def test_public_override_keys_are_accepted(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            "data.shards=somewhere/{000..003}.tar",
            "train.steps=7",
            "train.batch_size=16",
            "train.mixed_precision=bf16",
            "train.sample_every=3",
            "train.checkpoint_every=5",
            "resume=latest",
        ],
    )
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.mixed_precision) == (7, 16, "bf16")
    assert (cfg.train.sample_every, cfg.train.checkpoint_every, cfg.resume) == (3, 5, "latest")
    assert cfg.run_name == "run"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["train.stps=3"],
            "unknown config key 'train.stps' (did you mean train.steps?); accepted in train: steps,",
        ),
        (["trian.steps=3"], "unknown config key 'trian' (did you mean train?)"),
        (["train.steps=abc"], "bad value for 'train.steps'"),
        (["train.mixed_precision=fp8"], "expected one of ['auto', 'fp32', 'bf16', 'fp16']"),
        (["train.mixed_precision=no"], "write fp32 for no"),
        (["train.batch_size=0"], "train.batch_size must be >= 1, got 0"),
        (
            ["model.name=dcgn"],
            "unknown model 'dcgn' for model.name; choose from [biggan, conditional, "
            "conditional-wavegan, cyclegan, dcgan, mlp, sngan, stylegan2, wavegan, wgan, wgan-gp]",
        ),
        (["data.resolution=48"], "needs data.resolution to be a power of two"),
        (["steps"], "override 'steps' must look like key=value"),
    ],
)
def test_config_mistake_prints_one_line_and_exits_2(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = write(tmp_path / "c.yaml", "train:\n  steps: 5\n")
    assert cli.main(["config", str(config), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gandist: error: ") and expected in err
    assert len(err.splitlines()) == 1


def test_unknown_key_inside_yaml_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = write(tmp_path / "c.yaml", "data:\n  shardz: x\n")
    assert cli.main(["config", str(config)]) == 2
    assert "unknown config key 'data.shardz' (did you mean data.shards?)" in capsys.readouterr().err


def test_missing_and_unparsable_files_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert cli.main(["config", str(tmp_path / "nope.yaml")]) == 2
    assert f"config file not found: {tmp_path / 'nope.yaml'}" in capsys.readouterr().err
    broken = write(tmp_path / "broken.yaml", "train:\n  steps: [1\n")
    assert cli.main(["config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"cannot parse {broken}" in err and len(err.strip().splitlines()) == 1


def test_train_entry_exits_2_on_typo_before_any_process_group(tmp_path: Path) -> None:
    # A real process: the exit status a launcher or sbatch sees.
    result = run(
        [sys.executable, "-m", "gandist.train", "configs/dcgan.yaml", "train.stepz=1"], check=False
    )
    assert result.returncode == 2
    assert "unknown config key 'train.stepz'" in result.stderr
    assert "Traceback" not in result.stderr


def test_preflight_rejects_uneven_batch_missing_shards_and_cpu_fp16(
    tmp_path: Path, glyph_shards: Path
) -> None:
    base = [f"output_dir={tmp_path / 'run'}", f"data.shards={glyph_shards}"]
    with pytest.raises(ConfigError, match="must divide evenly by the 3 processes"):
        preflight(load_config(None, [*base, "train.batch_size=64"]), world_size=3)
    with pytest.raises(
        ConfigError, match="matched no .tar files|neither a shard file nor a folder"
    ):
        preflight(load_config(None, [*base, f"data.shards={tmp_path / 'empty'}"]), world_size=1)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        preflight(load_config(None, [*base, "train.mixed_precision=fp16"]), world_size=1)


def test_existing_run_needs_resume_or_a_new_output_dir(tmp_path: Path, glyph_shards: Path) -> None:
    done = tmp_path / "run" / "checkpoints" / "step-00000004"
    done.mkdir(parents=True)
    (done / "COMPLETE").write_text("4\n")
    base = [f"output_dir={tmp_path / 'run'}", f"data.shards={glyph_shards}"]
    with pytest.raises(ConfigError, match="already holds checkpoints: pass resume=latest"):
        preflight(load_config(None, base), world_size=1)
    preflight(load_config(None, [*base, "resume=latest"]), world_size=1)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.g_lr=inf", "optim.g_lr=inf must be a finite number"),
        ("optim.d_lr=nan", "optim.d_lr=nan must be a finite number"),
        ("optim.betas=[0.5,nan]", "optim.betas=(0.5, nan) must be a finite number"),
        ("reg.gp_weight=inf", "reg.gp_weight=inf must be a finite number"),
        ("data.max_bad_fraction=nan", "data.max_bad_fraction=nan must be a finite number"),
        ("train.dist_timeout_s=inf", "train.dist_timeout_s=inf must be a finite number"),
        ("train.seed=-1", "train.seed must be in [0, 2**63), got -1"),
        ("eval.num_samples=1", "eval.num_samples must be >= 2 (FID and KID compare sets), got 1"),
        (
            "model.num_classes=10",
            "model.num_classes=10 but model.name=dcgan is unconditional (it ignores labels)",
        ),
        ("data.timeout_s=0", "data.timeout_s must be > 0 seconds, got 0"),
    ],
)
def test_values_that_cannot_train_stop_the_cli_before_any_process(
    override: str, expected: str, tmp_path: Path, glyph_shards: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    args = [f"output_dir={run_dir}", f"data.shards={glyph_shards}", override]
    assert cli.main(["train", "configs/dcgan.yaml", "--num-processes", "2", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gandist: error: ") and expected in err, err
    assert len(err.splitlines()) == 1 and not run_dir.exists()


def test_wasserstein_without_a_lipschitz_constraint_warns_naming_both_cures(
    tmp_path: Path, glyph_shards: Path, capsys: pytest.CaptureFixture
) -> None:
    base = [
        f"output_dir={tmp_path / 'run'}",
        f"data.shards={glyph_shards}",
        "train.loss=wasserstein",
    ]
    preflight(load_config(None, base), world_size=1)
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("gandist: warning: train.loss=wasserstein without")
    assert "reg.gp_weight" in warning and "reg.weight_clip" in warning
    for cure in ("reg.gp_weight=10", "reg.weight_clip=0.01"):
        preflight(load_config(None, [*base, cure]), world_size=1)
        assert "warning" not in capsys.readouterr().err
