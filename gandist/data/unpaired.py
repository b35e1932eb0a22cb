"""Two unpaired image sets streamed side by side: one batch of each per draw, both positions saved."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from gandist.data.config import DataConfig
from gandist.data.health import BadDataError
from gandist.data.loader import DataStream
from gandist.distributed import derive_seed

DOMAIN_B_SEED = 1
"""Mixed into the seed of domain B's stream, so the two sets are shuffled independently."""


def domain_b_config(cfg: DataConfig) -> DataConfig:
    """The data section with `shards_b` as its shards: everything else is shared."""
    return dataclasses.replace(cfg, shards=cfg.shards_b, shards_b="")


class UnpairedStream:
    """This rank's batches of domain A (`data.shards`) and domain B (`data.shards_b`).

    Each domain is its own DataStream, with its own order, epochs and resume position: the
    sets may differ in size, and a resumed run reads on in both with the batches that would
    have come next. `next_batch` gives {"a": batch of A, "b": batch of B}, each as DataStream
    gives it ("image" [B, C, H, W] in [-1, 1], "label" [B], ...): CPU tensors, or on a CUDA
    `device` both domains travel as pinned uint8 and are scaled on the GPU, as a single stream's.
    """

    def __init__(
        self,
        cfg: DataConfig,
        *,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
        device: torch.device | None = None,
    ) -> None:
        common = {
            "batch_size": batch_size,
            "rank": rank,
            "world_size": world_size,
            "device": device,
        }
        self.a = DataStream(cfg, seed=seed, reduce_sum=reduce_sum, **common)
        self.b = DataStream(
            domain_b_config(cfg),
            seed=derive_seed(seed, DOMAIN_B_SEED),
            reduce_sum=reduce_sum,
            **common,
        )

    def next_batch(self) -> dict[str, Any]:
        return {"a": self.a.next_batch(), "b": self.b.next_batch()}

    def state_dict(self) -> dict[str, Any]:
        """Both streams' positions and bad-data counts (no collective)."""
        return {"a": self.a.state_dict(), "b": self.b.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"a", "b"}:
            raise ValueError(
                f"an unpaired stream state holds the streams 'a' and 'b'; got {sorted(state)} "
                "(a checkpoint of another algorithm?)"
            )
        self.a.load_state_dict(state["a"])
        self.b.load_state_dict(state["b"])

    def health(self) -> dict[str, float]:
        """Bad samples of both domains summed over ranks (`data/skipped`), each domain's
        fraction (`data/bad_fraction` for A, `data/bad_fraction_b`), a collective. Each domain
        stops training when its own fraction passes `data.max_bad_fraction`."""
        values_a = self.a.health()
        try:
            values_b = self.b.health()
        except BadDataError as err:
            combined = _combine(values_a, err.values)
            raise BadDataError(f"domain B (data.shards_b): {err}", combined) from None
        return _combine(values_a, values_b)


def _combine(values_a: dict[str, float], values_b: dict[str, float]) -> dict[str, float]:
    return {
        "data/skipped": values_a["data/skipped"] + values_b["data/skipped"],
        "data/bad_fraction": values_a["data/bad_fraction"],
        "data/bad_fraction_b": values_b["data/bad_fraction"],
    }
