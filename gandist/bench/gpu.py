"""`gandist bench gpu`: the speed settings side by side, against the plain fp32 loop.

For each config: the textbook fp32 loop (`gandist.bench.train.plain_loop`) and the Trainer at
every variant below (or the `--variants` given), on the same decoded batches from memory, on this
process's device (a GPU when there is one); a `+stream` variant instead streams the config's
shards through its data workers, as training does, and its row gives the share of step time the
Trainer waited for data. Prints one table (images/s, ratio to the plain loop and to the eager
fp32 Trainer, data wait, peak device memory) and writes it as JSON, rewritten after every run so
that an interrupted benchmark keeps what it measured. The first log window of every run
(warm-up, compilation) is dropped.
"""

from __future__ import annotations

import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gandist.bench.train import plain_loop, preload_batches, timed_run_overrides, trainer_loop
from gandist.training.config import load_config

VARIANTS: dict[str, list[str]] = {
    "fp32": ["train.mixed_precision=fp32"],
    "fp32+cl": ["train.mixed_precision=fp32", "train.channels_last=true"],
    "fp32+compile": ["train.mixed_precision=fp32", "train.compile=true"],
    "bf16": ["train.mixed_precision=bf16"],
    "bf16+cl": ["train.mixed_precision=bf16", "train.channels_last=true"],
    "bf16+cl+compile": [
        "train.mixed_precision=bf16",
        "train.channels_last=true",
        "train.compile=true",
    ],
    "bf16+cl+stream": ["train.mixed_precision=bf16", "train.channels_last=true"],
}
STREAMED = {"bf16+cl+stream"}  # read the shards (data workers) instead of batches in memory


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float | None:
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def bench_gpu(
    configs: list[str],
    overrides: list[str],
    variants: list[str] | None = None,
    steps: int = 60,
    out: str | None = None,
) -> list[dict[str, Any]]:
    """Run every variant of every config once; returns (and prints, and writes) the rows."""
    variants = list(VARIANTS) if variants is None else variants
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    device = _device()
    window = max(1, steps // 6)
    rows: list[dict[str, Any]] = []
    print(
        f"gandist bench gpu on {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}"
        f", torch {torch.__version__}, {steps} steps per run, log window {window} steps"
    )
    with tempfile.TemporaryDirectory() as tmp:
        common = timed_run_overrides(overrides, steps, window)
        for config in configs:
            base = load_config(config, [*common, f"output_dir={tmp}/base"])
            batches = preload_batches(base, num_batches=8)
            _reset_peak()
            plain = plain_loop(base, itertools.cycle(batches), steps, window, device=device)[1:]
            rows.append(_row(config, "plain fp32 loop", statistics.median(plain), _peak_gib()))
            for name in variants:
                out_dir = Path(tmp) / f"{Path(config).stem}-{name}"
                cfg = load_config(config, [*common, *VARIANTS[name], f"output_dir={out_dir}"])
                _reset_peak()
                start = time.perf_counter()
                rates = trainer_loop(cfg, None if name in STREAMED else batches, out_dir)[1:]
                row = _row(config, f"gandist {name}", statistics.median(rates), _peak_gib())
                row["data_wait_share"] = _data_wait_share(out_dir)
                row["wall_s"] = round(time.perf_counter() - start, 1)
                rows.append(row)
                _ratios(rows)
                if out:
                    Path(out).write_text(json.dumps(rows, indent=2) + "\n")
    print(format_table(rows))
    if out:
        print(f"wrote {out}")
    return rows


def _data_wait_share(out_dir: Path) -> float:
    """The median over log windows (the first dropped) of the share of step time spent waiting
    for the next real batch, as the Trainer logs it (`perf/data_wait_share`)."""
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return round(statistics.median(r["perf/data_wait_share"] for r in rows[1:] or rows), 4)


def _row(config: str, variant: str, images_per_s: float, peak_gib: float | None) -> dict:
    return {
        "config": config,
        "variant": variant,
        "images_per_s": round(images_per_s, 1),
        "peak_gib": None if peak_gib is None else round(peak_gib, 2),
    }


def _ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's images/s over its config's plain fp32 loop and over the eager fp32 Trainer."""
    for config in {r["config"] for r in rows}:
        mine = [r for r in rows if r["config"] == config]
        by_variant = {r["variant"]: r["images_per_s"] for r in mine}
        for row in mine:
            row["x_plain"] = round(row["images_per_s"] / by_variant["plain fp32 loop"], 2)
            if "gandist fp32" in by_variant:
                row["x_gandist_fp32"] = round(row["images_per_s"] / by_variant["gandist fp32"], 2)


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'config':<24} {'variant':<26} {'img/s':>9} {'x plain':>8} {'x fp32':>7} "
        f"{'data wait':>9} {'peak GiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        vs_fp32 = r.get("x_gandist_fp32")
        wait = r.get("data_wait_share")
        lines.append(
            f"{r['config']:<24} {r['variant']:<26} {r['images_per_s']:>9.1f} "
            f"{r['x_plain']:>8.2f} {'-' if vs_fp32 is None else f'{vs_fp32:.2f}':>7} "
            f"{'-' if wait is None else f'{wait:.1%}':>9} {peak:>9}"
        )
    return "\n".join(lines)
