"""`gandist bench logging`: what the per-log-step logging costs, the same short training run
logging every `train.log_every` steps against one that logs only at its last step.

A log step pays for everything issue 16 asked to log: the D outputs and diversity diagnostics of
that step, the cross-rank reductions of the window's losses, gradient norms and loss scales per
updater, the data-wait share and peak memory (one all-reduce each), learning rates, stream
health, the metrics.jsonl row (and the wandb row under `--wandb`). Between log steps the window
only sums tensors where they are made. Both runs take the same steps on the same data, so their
time per step differs only by that cost.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gandist.bench.train import timed_run_overrides, train_in_subprocesses
from gandist.rundir import read_metrics
from gandist.training.config import load_config


def run_seconds(
    config: str, overrides: list[str], out_dir: Path, num_processes: int
) -> tuple[float, int, list[float]]:
    """Training seconds (`train/hours` of the last log row), the number of log rows and, in
    one process, the wall time of each step (from one step's start to the next one's, so a log
    step's time holds its diagnostics and its log): in this process for one rank,
    `gandist train --num-processes N` for more (no per-step times then)."""
    step_s: list[float] = []
    if num_processes == 1:
        from accelerate.state import AcceleratorState

        from gandist.training.trainer import Trainer

        trainer = Trainer(load_config(config, [*overrides, f"output_dir={out_dir}"]))
        train_step, starts = trainer.train_step, []

        def timed_step() -> dict:
            starts.append(time.perf_counter())
            return train_step()

        trainer.train_step = timed_step  # type: ignore[method-assign]
        trainer.train()
        AcceleratorState._reset_state(reset_partial_state=True)
        step_s = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    else:
        train_in_subprocesses(config, overrides, num_processes, out_dir)
    rows = read_metrics(out_dir)
    logged = [row for row in rows if "train/hours" in row]
    return logged[-1]["train/hours"] * 3600, len(logged), step_s


def bench_logging(
    config: str,
    overrides: list[str],
    steps: int = 200,
    rounds: int = 3,
    log_every: int | None = None,
    num_processes: int = 1,
    wandb: bool = False,
) -> dict[str, Any]:
    """Alternate the two runs (their order swapped each round, so machine noise and warm caches
    hit both alike) and print the time per step of each and their ratio."""
    base = load_config(config, [*overrides, "output_dir=unused"])
    every = log_every or base.train.log_every
    if not 1 <= every < steps:
        raise ValueError(f"--log-every {every} must be in [1, --steps {steps})")
    runs = {"default": every, "quiet": steps}  # quiet: only the last step logs
    common = [
        *[o for o in timed_run_overrides(overrides, steps, every) if "log_every" not in o],
        f"tracking.wandb={str(wandb).lower()}",
    ]
    print(
        f"gandist bench logging: {base.model.name} at {base.data.resolution} px, global batch "
        f"{base.train.batch_size}, {num_processes} rank(s), {steps} steps x {rounds} rounds; "
        f"logging every {every} steps against only at step {steps}; wandb "
        f"{'offline' if wandb else 'off'}",
        flush=True,
    )
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    log_rows: dict[str, int] = {}
    log_step_s: list[float] = []
    other_step_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(rounds):
            order = list(runs) if index % 2 == 0 else list(reversed(runs))
            for name in order:
                out_dir = Path(tmp) / f"{name}-{index}"
                run_overrides = [*common, f"train.log_every={runs[name]}"]
                elapsed, log_rows[name], step_s = run_seconds(
                    config, run_overrides, out_dir, num_processes
                )
                seconds[name].append(elapsed)
                if name == "default":  # step n (1-based) logs when n % every == 0
                    for n, took in enumerate(step_s, start=1):
                        (log_step_s if n % every == 0 else other_step_s).append(took)
            print(
                f"  round {index + 1}: every {every}: {seconds['default'][-1] / steps * 1e3:7.2f} "
                f"ms/step   only the last: {seconds['quiet'][-1] / steps * 1e3:7.2f} ms/step",
                flush=True,
            )
    default_s, quiet_s = (statistics.median(seconds[name]) / steps for name in runs)
    ratio = default_s / quiet_s
    extra_logs = log_rows["default"] - log_rows["quiet"]
    per_log_ms = (default_s - quiet_s) * steps / max(1, extra_logs) * 1e3
    print(
        f"median: every {every}: {default_s * 1e3:.2f} ms/step, only the last: "
        f"{quiet_s * 1e3:.2f} ms/step; time with logging / without = {ratio:.3f} "
        f"({log_rows['default']} against {log_rows['quiet']} log steps: {per_log_ms:.1f} ms "
        "per log step)"
    )
    if log_step_s:
        # Within one run, log steps against the steps between them: timed a few ms apart, so
        # a machine whose speed drifts (a shared one) affects both alike, unlike two runs.
        other_ms = statistics.median(other_step_s) * 1e3
        extra_ms = statistics.median(log_step_s) * 1e3 - other_ms
        share = extra_ms / (every * other_ms)
        print(
            f"within the logging runs: a step {other_ms:.2f} ms, a log step {extra_ms:+.2f} ms "
            f"more (medians of {len(other_step_s)} and {len(log_step_s)}): logging every {every} "
            f"steps costs {100 * share:.2f}% of training time"
        )
    result = {
        "log_every": every,
        "step_ms": statistics.median(other_step_s) * 1e3 if log_step_s else None,
        "log_step_extra_ms": extra_ms if log_step_s else None,
        "share": share if log_step_s else None,
        "ms_per_step": {name: statistics.median(seconds[name]) / steps * 1e3 for name in runs},
        "log_rows": log_rows,
        "ratio": ratio,
        "ms_per_log_step": per_log_ms,
    }
    print(json.dumps(result))
    return result
