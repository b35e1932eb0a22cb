"""`gandist sample --class`: names from the run or its shards' manifest, classes the model saw."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gandist import cli
from gandist.data.classes import CLASSES_FILE, save_class_names
from tests.conftest import tiny_overrides
from tests.test_preflight_data import image_shards


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A conditional model built for 5 classes, trained two steps on shards of 3 named ones."""
    tmp = tmp_path_factory.mktemp("classes")
    shards = image_shards(tmp / "shards", labelled=True, side=8)
    run_dir = tmp / "run"
    overrides = tiny_overrides(run_dir, shards, **{"data.resolution": 8, "tracking.wandb": False})
    extra = ["model.num_classes=5", "train.steps=2", "train.checkpoint_every=2"]
    extra += ["optim.g_lr=0.05", "optim.d_lr=0.05"]  # big steps: the classes draw apart at once
    assert cli.main(["train", "configs/conditional.yaml", *overrides, *extra]) == 0
    return run_dir, shards


def sample(run: Path, value: str, out: Path) -> int:
    return cli.main(["sample", str(run), "--class", value, "--num", "4", "--out", str(out)])


def test_a_class_name_draws_the_same_grid_as_its_index(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir, _ = trained
    assert sample(run_dir, "triangles", tmp_path / "name.png") == 0
    assert sample(run_dir, "2", tmp_path / "index.png") == 0
    assert sample(run_dir, "0", tmp_path / "other.png") == 0
    assert (tmp_path / "name.png").read_bytes() == (tmp_path / "index.png").read_bytes()
    assert (tmp_path / "name.png").read_bytes() != (tmp_path / "other.png").read_bytes()


def test_unknown_names_and_classes_the_model_never_saw_are_refused_in_one_line(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir, _ = trained
    capsys.readouterr()
    assert sample(run_dir, "hexagons", tmp_path / "x.png") == 2
    assert capsys.readouterr().err == (
        "gandist: error: --class hexagons is not a class this model saw; choose from [0, 2] "
        "or a name: circles, squares, triangles\n"
    )
    # Built with 5 classes, trained on 3: labels 3 and 4 never reached it.
    assert sample(run_dir, "4", tmp_path / "x.png") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--class 4 is not a class this model saw" in err
    assert "training data held no such class" in err
    assert not (tmp_path / "x.png").exists()


def test_names_stored_in_the_run_outlive_its_shards(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir, shards = trained
    assert json.loads((run_dir / CLASSES_FILE).read_text()) == ["circles", "squares", "triangles"]
    moved = tmp_path / "moved-run"
    shutil.copytree(run_dir, moved)
    for config in moved.rglob("config.yaml"):  # as if the shards were deleted after training
        config.write_text(config.read_text().replace(str(shards), str(tmp_path / "gone")))
    capsys.readouterr()
    assert sample(moved, "triangles", tmp_path / "kept.png") == 0  # the Trainer stored them
    (moved / CLASSES_FILE).unlink()  # a run from before names were stored
    assert sample(moved, "triangles", tmp_path / "x.png") == 2
    assert "class names of this run are unknown" in capsys.readouterr().err
    assert sample(moved, "2", tmp_path / "index.png") == 0

    assert save_class_names(moved, str(shards)) == ["circles", "squares", "triangles"]
    assert (moved / CLASSES_FILE).is_file()
    assert sample(moved, "triangles", tmp_path / "name.png") == 0
    assert (tmp_path / "name.png").read_bytes() == (tmp_path / "index.png").read_bytes()
