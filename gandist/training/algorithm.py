"""What a GAN algorithm gives the Trainer: named networks, the phases of a step, their losses.

The Trainer knows no generator or discriminator. An algorithm declares its networks by name and
its optimizers (which networks each steps); each training step is a list of phases, each
training some networks with one optimizer, optionally on a fresh real batch. A new kind of GAN
(two generators, audio, ...) is a new Algorithm, not an edit of the loop.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gandist.data.loader import Batches, DataStream
from gandist.training.config import Config

Metrics = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Phase:
    """One update inside a training step."""

    name: str
    """Short name used in logs and metric keys ("d", "g", ...)."""
    trains: tuple[str, ...]
    """Networks updated here; every other network is frozen (requires_grad False) meanwhile."""
    optimizer: str
    """The Updater that steps them."""
    needs_real: bool = True
    """Whether the phase draws a fresh real batch from the data stream."""
    index: int = 0
    """How many phases of this name ran before this one: lazy regularisers count on it."""


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer the algorithm needs: Adam over the parameters of `networks`."""

    networks: tuple[str, ...]
    lr: float
    betas: tuple[float, float]


@dataclass
class Runtime:
    """What an algorithm may ask of the running Trainer, without knowing Accelerate."""

    device: torch.device
    world_size: int
    batch_per_rank: int
    autocast: Callable[[], contextlib.AbstractContextManager]
    unwrap: Callable[[nn.Module], nn.Module]
    grad_scale: Callable[[str], float]
    """The current loss scale of an optimizer (1 outside fp16)."""


class Algorithm(ABC):
    """The GAN maths of one family of training methods. Subclasses fill `networks` in __init__;
    the Trainer replaces them with their DDP-wrapped versions before the first step."""

    cfg: Config
    networks: dict[str, nn.Module]
    runtime: Runtime
    diagnostics: bool = True
    """Whether this step should compute diagnostic metrics (set by the Trainer on log steps):
    costly-to-gather values such as sample diversity are only measured when they are logged."""

    def bind(self, runtime: Runtime) -> None:
        """Called once the networks are wrapped; unwraps them once (Accelerate's unwrap_model
        probes for DeepSpeed through importlib on every call: ~5 ms, measured on CPU)."""
        self.runtime = runtime
        self._local = {name: runtime.unwrap(net) for name, net in self.networks.items()}

    def local(self, name: str) -> nn.Module:
        """A network without its DDP wrapper (for frozen use and penalties on the local graph)."""
        return self._local[name]

    @property
    @abstractmethod
    def images_per_step(self) -> int:
        """Real samples one training step consumes, over all ranks."""

    @abstractmethod
    def optimizers(self) -> dict[str, OptimizerSpec]: ...

    @abstractmethod
    def phases(self, step: int) -> list[Phase]: ...

    @abstractmethod
    def loss(self, phase: Phase, batch: dict[str, Any] | None) -> tuple[torch.Tensor, Metrics]:
        """The phase's loss (a scalar with a graph) and detached metrics; pure maths, no step."""

    def after_update(self, phase: Phase, skipped: bool) -> None:  # noqa: B027 - optional hook
        """What follows an update (EMA, weight clipping, image pools)."""

    @abstractmethod
    def sample(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """The sample grid's content from fixed inputs: [B, C, H, W] in [-1, 1] or [B, 1, L];
        or several named grids ({"samples": ..., "samples_raw": ...}; "samples" is the main one)."""

    @abstractmethod
    def eval_generator(self) -> nn.Module:
        """The generator evaluation scores and checkpoints export (the EMA when there is one)."""

    def state(self) -> dict[str, Any]:
        """Named stateful components beyond the networks and optimizers (e.g. `ema`), the same
        on every rank; saved once, by the main process."""
        return {}

    def rank_state(self) -> dict[str, Any]:
        """Named stateful components that differ per rank (e.g. image pools), saved by each."""
        return {}

    def build_stream(
        self,
        *,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        reduce_sum: Callable[[torch.Tensor], torch.Tensor],
    ) -> Batches:
        """This rank's real data: one DataStream over `data.shards` by default. An algorithm that
        trains on several sets (CycleGAN's two domains) returns one object that draws a batch
        of each and checkpoints every position, behind the same protocol."""
        return DataStream(
            self.cfg.data,
            batch_size=batch_size,
            rank=rank,
            world_size=world_size,
            seed=seed,
            reduce_sum=reduce_sum,
            device=self.runtime.device,
        )

    def check_batch(self, batch: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Raise a clear error for a real batch this algorithm cannot train on."""

    @contextlib.contextmanager
    def trainable(self, phase: Phase) -> Iterator[None]:
        """Unfreeze only the networks `phase` trains; restore every network afterwards."""
        frozen = [m for name, m in self.networks.items() if name not in phase.trains]
        for module in frozen:
            module.requires_grad_(False)
        try:
            yield
        finally:
            for module in frozen:
                module.requires_grad_(True)
