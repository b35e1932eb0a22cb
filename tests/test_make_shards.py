"""`data make` on a user's folder: shards mix all classes, enough of them, and `inspect` sees all."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gandist import cli
from gandist.data.config import DataConfig
from gandist.data.loader import build_loader
from gandist.data.make import MakeOptions, make_shards
from gandist.data.shards import write_manifest, write_shards
from gandist.data.verify import scan_shards
from tests.conftest import gandist_cli, tiny_overrides

CLASSES = ("circles", "squares", "triangles")


def class_folder(root: Path, per_class: int) -> Path:
    """`per_class` small images in each of three class folders, listed class by class."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) // 3 + 80 * label
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def three_hundred(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return class_folder(tmp_path_factory.mktemp("photos"), per_class=100)


def shard_labels(out: Path) -> list[list[int]]:
    """The labels of each shard in the order they were written."""
    labels = []
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            names = sorted(m.name for m in tar.getmembers() if m.name.endswith(".cls"))
            labels.append([int(tar.extractfile(name).read()) for name in names])
    return labels


def first_batch_labels(shards: Path, batch_size: int) -> set[int]:
    cfg = DataConfig(shards=str(shards), num_workers=0, shuffle_buffer=0, resolution=8)
    batch = next(iter(build_loader(cfg, batch_size=batch_size, rank=0, world_size=1, seed=0)))
    return set(batch["label"].tolist())


def test_a_300_image_folder_with_default_settings_gives_many_mixed_shards(
    three_hundred: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "shards"
    args = ["--from", str(three_hundred), "--out", str(out), "--kind", "image", "--size", "8"]
    assert cli.main(["data", "make", *args, "--workers", "1", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    counts = [s["count"] for s in manifest["shards"]]
    assert len(counts) >= 4 and sum(counts) == 300, counts  # enough for 2 ranks x 2 workers
    assert f"in {len(counts)} shards" in capsys.readouterr().out
    assert manifest["classes"] == list(CLASSES) and manifest["seed"] == 0
    # The folder is listed class by class, yet no shard holds a single class, and the first
    # training batch (no shuffle buffer) holds all three.
    assert all(len(set(labels)) > 1 for labels in shard_labels(out))
    assert first_batch_labels(out, batch_size=12) == {0, 1, 2}


@pytest.mark.dist
def test_a_300_image_folder_trains_on_2_ranks_x_2_workers_with_default_shards(
    three_hundred: Path, tmp_path: Path
) -> None:
    out, run_dir = tmp_path / "shards", tmp_path / "run"
    args = ["--from", str(three_hundred), "--out", str(out), "--kind", "image", "--size", "8"]
    assert cli.main(["data", "make", *args, "--workers", "1", "--quiet"]) == 0
    overrides = tiny_overrides(run_dir, out, **{"data.resolution": 8, "data.num_workers": 2})
    gandist_cli(
        "train", "configs/dcgan.yaml", *overrides, "train.steps=2", "tracking.wandb=false",
        "--num-processes", "2",
    )  # fmt: skip
    assert (run_dir / "checkpoints" / "step-00000002" / "COMPLETE").is_file()


def test_class_sorted_folder_gives_a_first_training_batch_holding_every_class(
    tmp_path: Path,
) -> None:
    src = class_folder(tmp_path / "src", per_class=24)
    make_shards(src, tmp_path / "out", MakeOptions(size=8), progress=False)
    assert first_batch_labels(tmp_path / "out", batch_size=12) == {0, 1, 2}
    assert all(set(labels) == {0, 1, 2} for labels in shard_labels(tmp_path / "out"))


def test_the_same_seed_gives_the_same_shards_and_another_seed_another_order(
    tmp_path: Path,
) -> None:
    src = class_folder(tmp_path / "src", per_class=6)

    def digests(name: str, seed: int) -> list[str]:
        make_shards(src, tmp_path / name, MakeOptions(size=8), seed=seed, progress=False)
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        return [s["sha256"] for s in manifest["shards"]]

    assert digests("a", 0) == digests("b", 0)
    assert digests("a", 0) != digests("c", 1)


def test_inspect_draws_the_contact_sheet_from_the_whole_set(tmp_path: Path) -> None:
    # Three single-class shards, written class by class: the first 12 samples are all class 0.
    def glyph(label: int, i: int) -> dict:
        return {"__key__": f"{label}-{i:03d}", "cls": label, "png": png_bytes(label)}

    samples = [glyph(label, i) for label in range(3) for i in range(40)]
    shards = write_shards(samples, tmp_path / "sorted", "sorted", max_count=40)
    write_manifest(tmp_path / "sorted", shards, kind="image", classes=list(CLASSES))
    report, kept = scan_shards(str(tmp_path / "sorted"), keep=12)
    assert report.num_samples == 120 and len(kept) == 12
    assert {label for _, (_, label) in kept} == {0, 1, 2}


def png_bytes(label: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (80 * label, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_training_on_a_folder_of_images_says_to_make_shards_from_it(
    three_hundred: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    assert cli.main(["train", "configs/dcgan.yaml", *tiny_overrides(run_dir, three_hundred)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not run_dir.exists()
    assert re.search(r"it holds image files \(\w+/\d{4}\.png\): make shards from it with ", err)
    assert f"`gandist data make --from {three_hundred} --out {three_hundred}-shards" in err
