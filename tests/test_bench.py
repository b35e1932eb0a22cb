"""Benchmarks run end to end on tiny settings (their figures are printed, never asserted on speed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gandist import cli
from tests.conftest import tiny_overrides


def test_bench_train_prints_both_loops_and_their_ratio(
    tmp_path: Path, glyph_shards: Path, capsys: pytest.CaptureFixture
) -> None:
    overrides = [
        o
        for o in tiny_overrides(tmp_path / "unused", glyph_shards)
        if not o.startswith("output_dir")
    ]
    assert (
        cli.main(
            ["bench", "train", "configs/dcgan.yaml", *overrides, "--steps", "12", "--rounds", "2"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("round ") == 2
    assert "trainer / plain = " in out
