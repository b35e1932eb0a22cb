"""`gandist --help` answers without importing torch and friends (the seconds are a benchmark's)."""

from __future__ import annotations

import pytest

from gandist.bench.startup import time_command
from tests.conftest import ROOT


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "--help"],
        ["data", "make", "--help"],
        ["sample", "--help"],
        ["train", "configs/dcgan.yaml", "train.stepz=1"],  # a key typo
        ["train", "configs/dcgan.yaml", "model.name=dcgn"],  # a registry name typo
    ],
)
def test_help_imports_no_heavy_package(argv: list[str]) -> None:
    _, heavy = time_command(argv, ROOT)
    assert heavy == "-", f"gandist {' '.join(argv)} imported {heavy}"
