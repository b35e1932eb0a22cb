"""One optimizer's update: backward, loss scaling, clipping, the non-finite guard, step, schedule."""

from __future__ import annotations

import logging
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from gandist.schedules import build_scheduler
from gandist.training.algorithm import Algorithm, OptimizerSpec
from gandist.training.config import OptimConfig, TrainConfig
from gandist.training.performance import (
    adam_options,
    compile_networks,
    configure_backends,
    to_channels_last,
)

log = logging.getLogger(__name__)


class NonFiniteTrainingError(RuntimeError):
    """Too many updates in a row had a non-finite loss or gradient; the run stops unsaved."""


class NonFiniteGuard:
    """Counts skipped updates; `max_in_a_row` in a row of one phase stop the run unsaved."""

    def __init__(self, max_in_a_row: int, warn: bool) -> None:
        self.max_in_a_row, self.warn = max_in_a_row, warn
        self.in_a_row: dict[str, int] = {}  # per phase: a D that never updates is as stuck

    def record(self, skipped: bool, phase: str, step: int) -> None:
        if not skipped:
            self.in_a_row[phase] = 0
            return
        count = self.in_a_row[phase] = self.in_a_row.get(phase, 0) + 1
        if self.warn:  # fp16 skips as it finds its loss scale: no warning there
            log.warning(
                "step %d phase %s: non-finite loss or gradient, update skipped", step, phase
            )
        if count >= self.max_in_a_row:
            raise NonFiniteTrainingError(
                f"{count} updates in a row had non-finite losses or gradients (last: phase "
                f"{phase} at step {step}); stopped without saving. The last good checkpoint is "
                "kept (resume=latest); lower the learning rates, set optim.grad_clip_norm, or "
                "train in fp32"
            )


class Updater:
    """Steps one optimizer over some networks' parameters, with its own fp16 GradScaler.

    fp16 keeps one loss scale per optimizer (so per network in a G/D GAN): Accelerate steps a
    single shared scaler inside every optimizer's step(), so an overflow in G's gradients would
    halve the scale D's loss uses, and the growth interval would count both networks' steps.

    The non-finite guard (`check_finite`): a loss or gradient that is not finite on any rank
    skips this update on every rank (one all-reduce of a flag), so ranks never diverge and no
    NaN reaches the weights. Under fp16 the GradScaler makes the same decision itself (grads are
    identical across ranks after DDP's all-reduce), skipping and backing off the scale.
    """

    def __init__(
        self,
        name: str,
        optimizer: Any,
        parameters: list[nn.Parameter],
        accelerator: Accelerator,
        *,
        lr_schedule: str,
        warmup_steps: int,
        total_steps: int,
        decay_after_steps: int = 0,
        clip_norm: float = 0.0,
        fp16: bool = False,
        check_finite: bool = True,
    ) -> None:
        self.name = name
        self.optimizer = optimizer  # Accelerate's wrapper; .optimizer is the torch optimizer
        self.parameters = parameters
        self.accelerator = accelerator
        self.clip_norm = clip_norm
        self.check_finite = check_finite
        self.scaler = torch.amp.GradScaler(accelerator.device.type) if fp16 else None
        self.schedule = (lr_schedule, warmup_steps, total_steps, decay_after_steps)
        self.scheduler = build_scheduler(self.torch_optimizer, *self.schedule)

    @property
    def torch_optimizer(self) -> torch.optim.Optimizer:
        return getattr(self.optimizer, "optimizer", self.optimizer)

    @property
    def grad_scale(self) -> float:
        """The factor the loss is multiplied by before backward (1 outside fp16); penalties that
        differentiate inside the loss scale their own autograd.grad by it."""
        return self.scaler.get_scale() if self.scaler is not None else 1.0

    def step(self, loss: torch.Tensor) -> tuple[dict[str, torch.Tensor], bool]:
        """Backward and (unless skipped) step; returns the metrics and whether it was skipped."""
        # The torch optimizer and loss.backward() directly: Accelerate's wrappers add nothing here
        # (no gradient accumulation; fp16 scaling is this Updater's own) but probe for optional
        # packages through importlib on every call (~2 ms each on CPU, 4 calls a step).
        metrics: dict[str, torch.Tensor] = {}
        self.torch_optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
        if self.clip_norm > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.torch_optimizer)  # clip the true gradients
            norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_norm).detach()
        else:
            # One fused norm on the device (no host sync); under fp16 the gradients are scaled.
            norm = self._grad_norm() / self.grad_scale
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.step(self.torch_optimizer)
            self.scaler.update()
            skipped = self.scaler.get_scale() < scale  # the scaler backs off exactly when it skips
            metrics["loss_scale"] = torch.tensor(self.scaler.get_scale())
        else:
            skipped = self.check_finite and not self._all_finite(loss, norm)
            if not skipped:
                self.torch_optimizer.step()
        if not skipped:  # a skipped update's infinite norm would swamp the window's mean
            metrics["grad_norm"] = norm
        metrics["skipped"] = torch.tensor(float(skipped))
        return {f"{self.name}_{key}": value for key, value in metrics.items()}, skipped

    def _grad_norm(self) -> torch.Tensor:
        """The L2 norm of all this optimizer's gradients together."""
        grads = [p.grad for p in self.parameters if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.accelerator.device)
        return torch.nn.utils.get_total_norm(grads).detach()

    def _all_finite(self, loss: torch.Tensor, norm: torch.Tensor) -> bool:
        """Whether the loss and every gradient are finite on every rank (one all-reduce)."""
        bad = (~(torch.isfinite(loss.detach()) & torch.isfinite(norm))).float().reshape(1)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad.to(self.accelerator.device), reduction="sum")
        return not bool(bad.item())

    def end_step(self) -> None:
        """Advance the learning-rate schedule once per training step (not per update)."""
        self.scheduler.step()

    def apply_config(self, lr: float, betas: tuple[float, float], step: int) -> list[str]:
        """Use this config's learning rate and betas after a resume, not the saved ones.

        The saved optimizer state brings its parameter groups (lr, betas) back; a user who
        resumes with `optim.g_lr=...` expects that rate. The schedule is rebuilt on the new base
        rate at `step`. Returns what changed, for the one-line resume message.
        """
        changed = []
        for group in self.torch_optimizer.param_groups:
            old_lr = group.get("initial_lr", group["lr"])
            if old_lr != lr:
                changed.append(f"{self.name} lr {old_lr:g} -> {lr:g}")
            if tuple(group["betas"]) != tuple(betas):
                changed.append(f"{self.name} betas {tuple(group['betas'])} -> {tuple(betas)}")
            group["initial_lr"] = lr
            group["lr"] = lr
            group["betas"] = tuple(betas)
        self.scheduler = build_scheduler(self.torch_optimizer, *self.schedule)
        # LambdaLR's rate is a pure function of its step count: jump straight to `step`.
        self.scheduler.last_epoch = step
        for group, base, multiplier in zip(
            self.torch_optimizer.param_groups,
            self.scheduler.base_lrs,
            self.scheduler.lr_lambdas,
            strict=True,
        ):
            group["lr"] = base * multiplier(step)
        self.scheduler._last_lr = [group["lr"] for group in self.torch_optimizer.param_groups]
        return sorted(set(changed))

    @property
    def learning_rate(self) -> float:
        return float(self.torch_optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's moments and parameter groups (its GradScaler is a component of its own,
        so a resume that switches fp16 on or off is named as such)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler_step": self.scheduler.last_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.last_epoch = int(state["scheduler_step"])


def prepare_updaters(
    algorithm: Algorithm,
    accelerator: Accelerator,
    optim: OptimConfig,
    train: TrainConfig,
    fp16: bool,
) -> dict[str, Updater]:
    """DDP-wrap the algorithm's networks (in place) and build one Adam and Updater per optimizer
    it declares, each over the parameters of the networks it steps; `train.channels_last` and
    `train.compile` apply here (gandist.training.performance says how and why)."""
    names, specs = list(algorithm.networks), algorithm.optimizers()
    device = accelerator.device
    configure_backends(device)
    if train.channels_last:
        to_channels_last(algorithm.networks)

    def parameters(spec: OptimizerSpec) -> list[nn.Parameter]:
        return [p for net in spec.networks for p in algorithm.networks[net].parameters()]

    optimizers = [
        torch.optim.Adam(parameters(s), lr=s.lr, betas=s.betas, **adam_options(device))
        for s in specs.values()
    ]
    prepared = accelerator.prepare(*algorithm.networks.values(), *optimizers)
    algorithm.networks = dict(zip(names, prepared[: len(names)], strict=True))
    if train.compile:
        algorithm.networks = compile_networks(algorithm.networks, train.compile_backend)
    return {
        name: Updater(
            name,
            optimizer,
            parameters(specs[name]),
            accelerator,
            lr_schedule=optim.lr_schedule,
            warmup_steps=optim.warmup_steps,
            total_steps=train.steps,
            decay_after_steps=optim.decay_after_steps,
            clip_norm=optim.grad_clip_norm,
            fp16=fp16,
            check_finite=train.skip_nonfinite,
        )
        for name, optimizer in zip(specs, prepared[len(names) :], strict=True)
    }
