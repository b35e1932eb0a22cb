"""Benchmarks run end to end on tiny settings (their figures are printed, never asserted on speed)."""

from __future__ import annotations

import json
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


def test_bench_logging_times_the_same_run_logging_often_and_only_at_the_end(
    tmp_path: Path, glyph_shards: Path, capsys: pytest.CaptureFixture
) -> None:
    overrides = [
        o
        for o in tiny_overrides(tmp_path / "unused", glyph_shards)
        if not o.startswith(("output_dir", "train."))
    ]
    args = ["bench", "logging", "configs/dcgan.yaml", *overrides, "train.batch_size=8"]
    assert cli.main([*args, "--steps", "6", "--rounds", "1", "--log-every", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    result = json.loads(lines[-1])
    # The logging run logs at steps 2, 4 and 6; the quiet one only at its last step.
    assert result["log_rows"] == {"default": 3, "quiet": 1}
    assert sum(line.startswith("  round ") for line in lines) == 1
    fast, slow = result["ms_per_step"]["quiet"], result["ms_per_step"]["default"]
    assert fast > 0 and result["ratio"] == pytest.approx(slow / fast)
    assert result["ms_per_log_step"] == pytest.approx((slow - fast) * 6 / 2)
    assert f"time with logging / without = {result['ratio']:.3f}" in lines[-3]
    # Within the logging run: steps 1, 3 and 5 against the log steps 2 and 4 (step 6, the
    # last, also samples and saves: left out).
    assert "(medians of 3 and 2)" in lines[-2]
    assert result["share"] == pytest.approx(result["log_step_extra_ms"] / (2 * result["step_ms"]))
    assert cli.main([*args, "--steps", "6", "--log-every", "6"]) == 2  # nothing to compare


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


def test_bench_families_times_each_config_on_two_ranks_and_prints_consistent_rows(
    capfd: pytest.CaptureFixture,
) -> None:
    tiny = ["train.batch_size=4", "model.latent_dim=8", "model.g_width=4", "model.d_width=4"]
    args = ["bench", "families", "configs/mlp.yaml", "configs/wgan-gp.yaml", "--steps", "2"]
    assert cli.main([*args, "--warmup", "0", "--set", *tiny]) == 0  # --num-processes auto
    lines = capfd.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("training throughput"))
    assert lines[start].startswith("training throughput, 2 CPU ranks")  # auto: 2 gloo ranks
    rows = {
        line.split()[0]: line.split()
        for line in lines[start:]
        if line.split()[:1] in (["mlp"], ["wgan-gp"])
    }
    assert set(rows) == {"mlp", "wgan-gp"}, lines
    for config, n_critic in (("mlp", 1), ("wgan-gp", 5)):
        _, model, precision, batch, critic, step_s, g_per_s, d_per_s = rows[config]
        assert (model, precision, int(batch), int(critic)) == (config, "fp32", 4, n_critic)
        # Printed to 1 ms and to 0.1 img/s: G img/s x s/step = batch, up to that rounding.
        assert float(step_s) > 0
        rounding = 0.0005 / float(step_s) + 0.05 / float(g_per_s) + 0.001
        assert float(g_per_s) * float(step_s) == pytest.approx(4, rel=rounding)
        # Both printed to 0.1: D real img/s = n_critic x G img/s up to that rounding.
        assert float(d_per_s) == pytest.approx(
            n_critic * float(g_per_s), abs=0.05 * n_critic + 0.05
        )


@pytest.mark.slow
def test_bench_fid_scores_torch_fidelity_and_the_sharded_path_with_inception(
    capfd: pytest.CaptureFixture,
) -> None:
    """Tiny sizes, yet 50 s on 2 idle cores (140 s loaded): 3 processes each load InceptionV3 and
    take a 2048-wide FID, whose eigendecomposition alone is several seconds."""
    args = ["bench", "fid", "--num", "2", "--num-real", "2", "--ranks", "1", "--batch-size", "2"]
    assert cli.main(args) == 0
    lines = capfd.readouterr().out.splitlines()
    rows = [line.rsplit(maxsplit=6) for line in lines if line.startswith(("torch-", "gandist s"))]
    assert [row[0].strip() for row in rows] == [
        "torch-fidelity calculate_metrics",
        "gandist sharded",
    ]
    base_s = float(rows[0][3])
    for _, ranks, threads, score_s, per_s, speedup, fid in rows:
        assert int(ranks) == 1 and int(threads) >= 1
        assert float(per_s) == pytest.approx(2 / float(score_s), rel=0.1, abs=0.06)
        assert float(speedup.rstrip("x")) == pytest.approx(base_s / float(score_s), rel=0.1)
        assert 0 < float(fid) < float("inf")


@pytest.mark.slow
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


def test_bench_gpu_runs_each_variant_against_the_plain_loop_and_writes_the_table(
    tmp_path: Path, glyph_shards: Path, capsys: pytest.CaptureFixture
) -> None:
    overrides = [
        o
        for o in tiny_overrides(tmp_path / "unused", glyph_shards)
        if not o.startswith(("output_dir", "train.steps", "train.log_every", "train.sample"))
        and not o.startswith("train.checkpoint_every")
    ]
    out = tmp_path / "bench.json"
    argv = ["bench", "gpu", "configs/dcgan.yaml", "--set", *overrides]
    argv += ["--variants", "fp32", "bf16+cl+stream", "--steps", "12", "--out", str(out)]
    assert cli.main(argv) == 0
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == [
        "plain fp32 loop", "gandist fp32", "gandist bf16+cl+stream",
    ]  # fmt: skip
    assert all(r["images_per_s"] > 0 for r in rows)
    fp32 = rows[1]["images_per_s"]
    assert rows[2]["x_gandist_fp32"] == round(rows[2]["images_per_s"] / fp32, 2)
    assert rows[0]["x_plain"] == 1.0
    # Batches from memory cost no wait; the streamed run decodes in-process (num_workers=0).
    assert rows[1]["data_wait_share"] < 0.05 < rows[2]["data_wait_share"] < 1
    assert "gandist bf16+cl+stream" in capsys.readouterr().out
    assert cli.main(["bench", "gpu", "--variants", "fp16+magic"]) == 2
