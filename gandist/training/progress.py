"""Training progress on the console: a tqdm bar on a terminal, plain timed lines in a log file."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any, TextIO

from tqdm.auto import tqdm


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(max(0.0, seconds))))


class ProgressReport:
    """Shows how far training is, where the main process writes its console output.

    On a terminal: a tqdm bar with the latest losses. Anywhere else (a Slurm log, CI, `> log`)
    carriage-return redraws would pile up as thousands of lines, so it writes one plain line
    (`step 120/5000 (2.4%) | 3.1 it/s | d_loss 0.693 g_loss 0.701 | elapsed 0:00:39, eta
    0:26:14`) at the first step, then at the first step at least `every_s` seconds after the
    previous line, and at the last step.
    """

    def __init__(
        self,
        total: int,
        initial: int,
        enabled: bool,
        every_s: float = 60.0,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.enabled, self.every_s = total, enabled, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.step = self._initial = initial
        self._start = self._line_time = time.monotonic()
        self.lines_written = 0
        self._shown: dict[str, float] = {}
        isatty = getattr(self.stream, "isatty", None)
        self.bar = None
        if enabled and isatty is not None and isatty():
            self.bar = tqdm(
                total=total, initial=initial, file=self.stream, dynamic_ncols=True, leave=True
            )

    def update(self, step: int, values: dict[str, float] | None = None) -> None:
        """After training step `step`; `values` are the scalars when this step logged them."""
        if not self.enabled:
            return
        if values is not None:
            self._shown = {k[6:]: v for k, v in values.items() if k.endswith("_loss")}
        advanced, self.step = step - self.step, step
        if self.bar is not None:
            self.bar.update(advanced)
            if values is not None:
                self.bar.set_postfix({k: f"{v:.3f}" for k, v in self._shown.items()})
            return
        now = time.monotonic()
        if not self.lines_written or step >= self.total or now - self._line_time >= self.every_s:
            self.stream.write(self.line(step, now) + "\n")
            self.stream.flush()
            self._line_time, self.lines_written = now, self.lines_written + 1

    def line(self, step: int, now: float) -> str:
        elapsed = now - self._start
        done = step - self._initial
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"step {step}/{self.total} ({100 * step / self.total:.1f}%)"]
        if rate > 0:
            parts.append(f"{rate:.2f} it/s" if rate >= 0.1 else f"{1 / rate:.1f} s/it")
        if self._shown:
            parts.append(" ".join(f"{k} {v:.3f}" for k, v in self._shown.items()))
        eta = (self.total - step) / rate if rate > 0 else 0.0
        parts.append(f"elapsed {_duration(elapsed)}, eta {_duration(eta)}")
        return " | ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> ProgressReport:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
