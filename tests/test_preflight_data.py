"""Data that does not fit the config fails in one line, exit 2, before a run directory exists."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from PIL import Image

from gandist import cli
from gandist.data.shards import write_manifest, write_shards
from gandist.errors import ConfigError
from gandist.training.config import load_config
from gandist.training.preflight import check_data_fits, resolve_num_classes
from tests.conftest import gandist_cli, tiny_overrides

CLASSES = ["circles", "squares", "triangles"]


def png(side: int, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (shade, 255 - shade, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_shards(
    out: Path, labelled: bool, side: int = 16, manifest: bool = True, num: int = 48
) -> Path:
    """`num` images of `side` px over 4 shards; labels 0..2 cycling, or none."""
    samples = [
        {"__key__": f"{i:05d}", "png": png(side, 5 * i)} | ({"cls": i % 3} if labelled else {})
        for i in range(num)
    ]
    shards = write_shards(samples, out, "s", max_count=num // 4)
    if manifest:
        classes = CLASSES if labelled else []
        write_manifest(out, shards, kind="image", resolution=side, channels=3, classes=classes)
    return out


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_shards(tmp_path_factory.mktemp("labelled"), labelled=True)


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_shards(tmp_path_factory.mktemp("unlabelled"), labelled=False)


def conditional_cfg(shards: Path, *overrides: str):
    return load_config(
        "configs/conditional.yaml", [f"data.shards={shards}", "output_dir=/unused", *overrides]
    )


@pytest.mark.parametrize(
    ("shards", "overrides", "expected"),
    [
        (
            "unlabelled",
            ["model.num_classes=3"],
            "model.name=conditional is class-conditional but {shards}/manifest.json has no labels",
        ),
        (
            "labelled",
            ["model.num_classes=2"],
            "model.num_classes=2 but {shards}/manifest.json holds labels 0..2; "
            "set model.num_classes=3",
        ),
        (
            "labelled",
            ["data.kind=audio"],
            "model.name=conditional generates images but data.kind=audio: choose an audio "
            "family (conditional-wavegan, wavegan) or set data.kind=image with image shards",
        ),
    ],
    ids=["conditional-on-unlabelled", "num-classes-below-labels", "kind"],
)
def test_data_mistakes_give_one_line_and_exit_2_before_a_run_directory_exists(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    shards: str,
    overrides: list[str],
    expected: str,
) -> None:
    folder = request.getfixturevalue(shards)
    run_dir = tmp_path / "run"
    args = tiny_overrides(run_dir, folder, **{"data.resolution": 16})
    result = gandist_cli(
        "train", "configs/conditional.yaml", *args, *overrides, "--num-processes", "2",
        check=False, timeout=60,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines == [lines[0]] and lines[0].startswith("gandist: error: "), result.stderr
    assert expected.format(shards=folder) in lines[0]
    assert not run_dir.exists()


def test_a_conditional_model_left_at_0_classes_trains_with_the_manifest_count(
    labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    assert cli.main([
        "train", "configs/conditional.yaml",
        *tiny_overrides(run_dir, labelled, **{"data.resolution": 8, "tracking.wandb": False}),
        "model.num_classes=0", "train.steps=1", "train.checkpoint_every=1",
    ]) == 0  # fmt: skip
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["num_classes"] == 3
    assert (
        f"gandist: note: images will be resized from 16 px to 8 (data.resolution; "
        f"{labelled}/manifest.json)" in capsys.readouterr().err.splitlines()
    )


def test_without_a_manifest_the_first_samples_speak(tmp_path: Path) -> None:
    bare = image_shards(tmp_path / "bare", labelled=False, manifest=False)
    with pytest.raises(ConfigError, match="class-conditional but .*s-000000.tar has no labels"):
        check_data_fits(conditional_cfg(bare, "model.num_classes=3"))
    bare_labelled = image_shards(tmp_path / "bare-labelled", labelled=True, manifest=False)
    assert check_data_fits(conditional_cfg(bare_labelled, "data.resolution=16")) == []
    with pytest.raises(ConfigError, match="model.num_classes=2 but .* holds labels 0..2"):
        check_data_fits(conditional_cfg(bare_labelled, "model.num_classes=2"))
    # The first samples only bound the labels from below: no guessing of num_classes.
    with pytest.raises(ConfigError, match="no manifest.json listing them"):
        resolve_num_classes(conditional_cfg(bare_labelled, "model.num_classes=0"))


def test_notes_name_more_classes_than_the_shards_hold(labelled: Path) -> None:
    cfg = conditional_cfg(labelled, "model.num_classes=5", "data.resolution=16")
    notes = check_data_fits(cfg)
    assert notes == [
        "model.num_classes=5 but the shards hold 3 classes: classes 3..4 will never be seen"
    ]
    unconditional = load_config(None, [f"data.shards={labelled}", "data.channels=1"])
    assert check_data_fits(unconditional) == [
        f"images will be resized from 16 px to 32 (data.resolution; {labelled}/manifest.json)",
        f"images will be converted from 3 channels to 1 (data.channels; {labelled}/manifest.json)",
    ]
