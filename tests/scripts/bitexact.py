"""What the two-rank stop-and-resume scripts compare: the state a Trainer shares with every
algorithm (Adam moments, learning rates, RNGs, counters), and a path-naming tensor diff.

Imported by its sibling scripts, which torchrun starts with this folder on sys.path.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from gandist.training.trainer import Trainer


def trainer_state(trainer: Trainer) -> dict[str, object]:
    """Every updater's Adam moments and learning rate, the RNGs, the step and images seen."""
    return {
        "adam": [
            [s[k] for s in u.torch_optimizer.state.values() for k in ("exp_avg", "exp_avg_sq")]
            for u in trainer.updaters.values()
        ],
        "lr": [u.learning_rate for u in trainer.updaters.values()],
        "torch_rng": torch.get_rng_state(),
        "python_rng": list(random.getstate()[1]),
        "numpy_rng": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "step": trainer.progress.step,
        "images_seen": trainer.progress.images_seen,
    }


def differences(a: object, b: object, where: str = "") -> list[str]:
    """The paths at which two nested dicts/lists of tensors and values differ (bit for bit)."""
    if isinstance(a, dict):
        return [d for key in a for d in differences(a[key], b[key], f"{where}.{key}")]
    if isinstance(a, list):
        if len(a) != len(b):
            return [where]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{where}[{i}]")
        ]
    if isinstance(a, torch.Tensor):
        return [] if a.dtype == b.dtype and torch.equal(a, b) else [where]
    return [] if a == b else [f"{where}: {a} != {b}"]
