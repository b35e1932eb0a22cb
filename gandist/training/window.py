"""The metrics of the steps between two logs: summed where they are made, reduced once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator


class MetricWindow:
    """Per-step metrics summed on the device between logs (no host sync per step); each key's
    mean over the steps that reported it, averaged across ranks in one all-reduce at log time.

    It also times the window on the host: wall time per step, and the part of it spent waiting
    for the next real batch (the loader's `next_batch()`), which says whether data feeding
    keeps up with the GPUs.
    """

    def __init__(self) -> None:
        self.clear()

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for key, value in metrics.items():
            value = torch.as_tensor(value).detach().float()
            self._sums[key] = self._sums[key] + value if key in self._sums else value
            self._counts[key] = self._counts.get(key, 0) + 1
        self.steps += 1
        self.timed_steps += 1

    @contextmanager
    def waiting_for_data(self) -> Iterator[None]:
        """Counts the time inside as waiting for data."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.data_wait_s += time.perf_counter() - start

    def reduce(self, accelerator: Accelerator) -> dict[str, float]:
        """Cross-rank means (collective: every rank calls it with the same keys)."""
        keys = sorted(self._sums)
        if not keys:
            return {}
        device = accelerator.device
        local = torch.stack([(self._sums[k] / self._counts[k]).to(device) for k in keys])
        means = accelerator.reduce(local, reduction="mean").tolist()
        return dict(zip(keys, means, strict=True))

    def perf(self, accelerator: Accelerator, images_per_step: int) -> dict[str, float]:
        """Throughput and timing since the clock last started (collective: one all-reduce).

        The share of time spent waiting for data and the peak GPU memory are the largest over
        the ranks: the slowest loader holds every rank back at the next all-reduce.
        """
        elapsed = max(1e-9, time.perf_counter() - self._start)
        steps = max(1, self.timed_steps)
        values = {
            "perf/images_per_s": steps * images_per_step / elapsed,
            "perf/step_time_s": elapsed / steps,
        }
        device = accelerator.device
        local = [min(1.0, self.data_wait_s / elapsed)]
        if device.type == "cuda":
            local.append(torch.cuda.max_memory_allocated(device) / 2**30)
            torch.cuda.reset_peak_memory_stats(device)
        worst = accelerator.reduce(torch.tensor(local, device=device), reduction="max").tolist()
        values["perf/data_wait_share"] = worst[0]
        if device.type == "cuda":
            values["perf/peak_memory_gib"] = worst[1]
        return values

    def restart_clock(self) -> None:
        """Start timing again (after a save or an evaluation, which are not training time)."""
        self._start = time.perf_counter()
        self.data_wait_s, self.timed_steps = 0.0, 0

    def clear(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self.steps = 0
        self.restart_clock()
