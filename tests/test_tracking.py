"""What reaches wandb: sample grids as the very pixels on disk, plain numbers, the offline fallback."""

from __future__ import annotations

import logging
import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.utils import save_image

from gandist.tracking import grid_to_uint8, wandb_mode
from tests import wandb_log
from tests.conftest import gandist_cli, tiny_overrides


def test_wandb_sample_images_equal_the_grids_on_disk_pixel_for_pixel(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    gandist_cli(
        "train", "configs/dcgan.yaml",
        *tiny_overrides(run_dir, glyph_shards, **{"tracking.wandb": True}),
    )  # fmt: skip
    run_file = wandb_log.run_file(run_dir)
    rows = wandb_log.history(run_file)
    logged = {row["_step"]: row["samples/filenames"] for row in rows if "samples/filenames" in row}
    assert sorted(logged) == [2, 4]
    for step, (name,) in logged.items():
        in_wandb = np.asarray(Image.open(run_file.parent / "files" / name))
        on_disk = np.asarray(Image.open(run_dir / "samples" / f"step-{step:08d}.png"))
        assert in_wandb.dtype == np.uint8 and in_wandb.shape == on_disk.shape == (138, 138, 3)
        assert np.array_equal(in_wandb, on_disk), f"step {step}: wandb image differs from disk"
        assert on_disk.std() > 1  # a real picture, not a blank one equal by accident
    # Every other logged value is a plain finite number (no tensors, arrays or strings).
    for row in rows:
        for key, value in row.items():
            if not key.startswith(("samples/", "_")):
                assert type(value) in (int, float) and math.isfinite(value), (key, value)


def test_grid_to_uint8_gives_the_bytes_save_image_writes(tmp_path: Path) -> None:
    grid = torch.rand(3, 21, 34, generator=torch.Generator().manual_seed(0))
    grid[0, 0, :4] = torch.tensor([0.0, 1.0, 0.5 / 255, 254.5 / 255])  # rounding edges
    save_image(grid, tmp_path / "grid.png")
    pixels = grid_to_uint8(grid)
    assert pixels.dtype == np.uint8 and pixels.shape == (21, 34, 3)
    assert np.array_equal(pixels, np.asarray(Image.open(tmp_path / "grid.png")))


@pytest.fixture
def wandb_credentials(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_wandb_goes_offline_with_one_warning_when_the_server_cannot_be_reached(
    wandb_credentials: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    wandb_credentials.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING, logger="gandist.tracking"):
        assert wandb_mode() == "offline"
    (record,) = caplog.records
    assert f"127.0.0.1:{port} is unreachable" in record.getMessage()
    assert "offline" in record.getMessage() and "\n" not in record.getMessage()


def test_wandb_stays_online_when_credentials_exist_and_the_server_answers(
    wandb_credentials: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        wandb_credentials.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert wandb_mode() == "online"
        # Through a proxy, as wandb goes: the proxy answers, the closed server port is not tried.
        wandb_credentials.setenv("http_proxy", f"http://127.0.0.1:{server.getsockname()[1]}")
        wandb_credentials.setenv("WANDB_BASE_URL", "http://wandb.invalid:1")
        assert wandb_mode() == "online"
    wandb_credentials.delenv("WANDB_API_KEY")
    wandb_credentials.setenv("HOME", "/nonexistent")  # no ~/.netrc either
    assert wandb_mode() == "offline"
