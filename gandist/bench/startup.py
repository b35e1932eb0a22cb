"""`gandist bench startup`: seconds from launch to answer of short `gandist` commands.

Each command runs in a fresh Python process (as a user's shell starts it), `rounds` times; the
median and range are printed with the heavy packages the command imported. `import torch`
alone is timed as the yardstick of what a command saves by not importing it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "torchvision", "accelerate", "wandb", "webdataset", "torch_fidelity", "scipy")
"""Packages that take a large share of a second (or several) to import."""

# Runs `gandist ARGS...` and reports on stderr which heavy packages it imported.
RUNNER = """
import atexit, sys
heavy = {heavy!r}
def report():
    print("HEAVY " + ",".join(m for m in heavy if m in sys.modules), file=sys.stderr)
atexit.register(report)
sys.argv = ["gandist", *sys.argv[1:]]
from gandist.cli import main
sys.exit(main())
"""

COMMANDS: dict[str, list[str]] = {
    "gandist --help": ["--help"],
    "gandist train --help": ["train", "--help"],
    "gandist train CONFIG train.stepz=1 (typo)": ["train", "configs/dcgan.yaml", "train.stepz=1"],
    "gandist config CONFIG": ["config", "configs/dcgan.yaml"],
    "gandist data make --help": ["data", "make", "--help"],
}


def time_command(argv: list[str], cwd: Path) -> tuple[float, str]:
    """Wall seconds of one run of `python -c RUNNER ARGV...`, and the heavy packages it loaded."""
    code = RUNNER.format(heavy=HEAVY)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    heavy = next(
        (line[6:] for line in result.stderr.splitlines() if line.startswith("HEAVY ")), "?"
    )
    return elapsed, heavy or "-"


def bench_startup(rounds: int = 5, cwd: Path | None = None) -> dict[str, float]:
    """Print median and range of each command's start-up time; returns the medians."""
    cwd = cwd or Path.cwd()
    runs: dict[str, list[float]] = {}
    loaded: dict[str, str] = {}
    yardstick = "python -c 'import torch' (yardstick)"
    jobs = {**COMMANDS, yardstick: None}
    for _ in range(rounds):  # interleaved, so a busy moment hits every command alike
        for name, argv in jobs.items():
            if argv is None:
                start = time.perf_counter()
                subprocess.run([sys.executable, "-c", "import torch"], cwd=cwd, check=True)
                runs.setdefault(name, []).append(time.perf_counter() - start)
                loaded[name] = "torch"
                continue
            elapsed, heavy = time_command(argv, cwd)
            runs.setdefault(name, []).append(elapsed)
            loaded[name] = heavy
    width = max(len(name) for name in runs)
    print(f"{'command':<{width}}  median s  range s      heavy imports ({rounds} rounds)")
    medians = {}
    for name, times in runs.items():
        medians[name] = statistics.median(times)
        span = f"{min(times):.2f}-{max(times):.2f}"
        print(f"{name:<{width}}  {medians[name]:8.2f}  {span:<11}  {loaded[name]}")
    return medians
