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


def test_bench_data_prints_stream_against_plain_for_each_worker_count_and_transport(
    glyph_shards: Path, capsys: pytest.CaptureFixture
) -> None:
    from gandist.bench.data import bench_readers, bench_transport

    args = ["bench", "data", str(glyph_shards), "--workers", "0", "1", "2", "--samples", "64"]
    assert cli.main([*args, "--batch-size", "16", "--rounds", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    figures = [row for row in rows if row and row[1] == "image"]
    assert [int(row[2]) for row in figures] == [0, 1, 2]
    assert all(float(row[3]) > 0 and float(row[4]) > 0 and float(row[8]) > 0 for row in figures)
    low, high = (float(x) for x in figures[1][7].split("-"))  # one round: a range of one
    assert low == high == float(figures[1][6])
    # 2 workers are also set against 2 plain loops run at once.
    assert [row[9] for row in figures[:2]] == ["-", "-"]
    plains, vs_plains = float(figures[2][9]), float(figures[2][10])
    assert plains > 0 and vs_plains == pytest.approx(float(figures[2][4]) / plains, abs=0.01)

    results = bench_transport([0.05, 2], num_batches=4)
    assert [(r["mb"], r["transport"]) for r in results] == [
        (size, way) for size in (0.05, 2) for way in ("pipe", "shared tensor", "slots")
    ]
    assert all(r["ms"] > 0 for r in results)
    assert cli.main(["bench", "data"]) == 2  # neither shards nor --transport
    readers = bench_readers([str(glyph_shards)], num_members=64, rounds=1)
    assert [r["reader"] for r in readers] == ["tarfile", "webdataset", "gandist"]
    assert readers[-1]["x_gandist"] == 1.0 and all(r["us_per_member"] > 0 for r in readers)


@pytest.mark.dist
def test_bench_audio_prints_audio_seconds_per_second_of_both(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tones = tmp_path / "tones"
    assert cli.main(
        ["data", "synth", "tones", "--out", str(tones), "--num", "16", "--shard-size", "4",
         "--workers", "1", "--quiet"]
    ) == 0  # fmt: skip
    overrides = [
        f"data.shards={tones}", "data.num_workers=0", "data.shuffle_buffer=4", "train.n_critic=2",
        "model.latent_dim=8", "model.g_width=2", "model.d_width=2", "train.batch_size=4",
        "train.num_samples=2",
    ]  # fmt: skip
    args = ["bench", "audio", "configs/wavegan.yaml", *overrides, "--steps", "4", "--rounds", "1"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "round 1: plain" in out and "trainer x2" in out
    assert "median seconds of generated audio per second of training: plain " in out
