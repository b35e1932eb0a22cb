"""The metrics of the steps between two logs: summed where they are made, reduced once."""

from __future__ import annotations

import time

import torch
from accelerate import Accelerator


class MetricWindow:
    """Per-step metrics summed on the device between logs (no host sync per step); each key's
    mean over the steps that reported it, averaged across ranks in one all-reduce at log time."""

    def __init__(self) -> None:
        self.clear()

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for key, value in metrics.items():
            value = torch.as_tensor(value).detach().float()
            self._sums[key] = self._sums[key] + value if key in self._sums else value
            self._counts[key] = self._counts.get(key, 0) + 1
        self.steps += 1

    def reduce(self, accelerator: Accelerator) -> dict[str, float]:
        """Cross-rank means (collective: every rank calls it with the same keys)."""
        keys = sorted(self._sums)
        if not keys:
            return {}
        device = accelerator.device
        local = torch.stack([(self._sums[k] / self._counts[k]).to(device) for k in keys])
        means = accelerator.reduce(local, reduction="mean").tolist()
        return dict(zip(keys, means, strict=True))

    def images_per_s(self, images_per_step: int) -> float:
        return self.steps * images_per_step / max(1e-9, time.perf_counter() - self._start)

    def restart_clock(self) -> None:
        """Start timing again (after a save or an evaluation, which are not training time)."""
        self._start = time.perf_counter()

    def clear(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self.steps = 0
        self.restart_clock()
