"""Speed settings of a training run: torch.compile, channels_last, TF32, cuDNN autotuning, Adam.

Compiling: the Trainer compiles each network's DDP wrapper (`torch.compile(DDP(module))`, the
order PyTorch recommends: Dynamo's DDPOptimizer splits the graph at DDP's gradient buckets, so
all-reduces still overlap the backward) after `accelerator.prepare`. Accelerate's own dynamo
plugin is not used (the launchers pass `--dynamo_backend no`, so a user's `accelerate config`
cannot switch it on behind `train.compile`): it would compile the module that
`unwrap_model` hands back, and the penalties differentiate that local module twice
(`autograd.grad(create_graph=True)`, then backward), which AOTAutograd cannot do. Here the
local modules stay eager: penalties, sampling and evaluation run eagerly, and checkpoints keep
the eager modules' state-dict keys.

The G phase's pass through the frozen D (`compile_frozen`) is a second compiled module over D's
local module, outside DDP (a frozen D has no gradients to all-reduce): its parameters have
requires_grad False there, so its graph differentiates the input images alone, once; Dynamo
guards on requires_grad, so this graph never serves a phase that trains D.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

log = logging.getLogger(__name__)

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)


def configure_backends(device: torch.device) -> None:
    """TF32 matmuls and convolutions and cuDNN autotuning for training on CUDA.

    Evaluation turns TF32 off for its own duration (`gandist.metrics.evaluate.exact_float32`),
    so scores stay comparable across runs and GPUs. Nothing changes on other devices.
    """
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    # GAN shapes are fixed for a run (full batches on every rank): autotune each conv once.
    torch.backends.cudnn.benchmark = True


def adam_options(device: torch.device) -> dict[str, Any]:
    """Adam's kernel choice: one fused kernel on CUDA, multi-tensor (foreach) elsewhere.

    torch's CPU default is the per-parameter loop (`_single_tensor_adam`), one small op per
    tensor per moment; foreach batches them (measured in docs/benchmarks.md)."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def is_convolutional(module: nn.Module) -> bool:
    return any(isinstance(m, CONVOLUTIONS) for m in module.modules())


def to_channels_last(networks: dict[str, nn.Module]) -> list[str]:
    """Convert the 2-d convolutional networks' parameters to channels_last (NHWC) in place.

    Before DDP wraps them (DDP fixes its gradient layout from the parameters' strides).
    Convolutions pick NHWC when their weight is NHWC, so activations follow without converting
    the inputs. Returns the names converted; others (MLPs, 1-d audio nets) are left as they are.
    """
    converted = []
    for name, network in networks.items():
        if any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in network.modules()):
            network.to(memory_format=torch.channels_last)
            converted.append(name)
    if not converted:
        log.warning("train.channels_last=true: no network has 2-d convolutions; nothing changed")
    return converted


def compile_networks(networks: dict[str, nn.Module], backend: str) -> dict[str, nn.Module]:
    """`torch.compile` of each prepared (DDP-wrapped, or bare on one process) network."""
    return {name: torch.compile(network, backend=backend) for name, network in networks.items()}


def compile_frozen(module: nn.Module, enabled: bool, backend: str) -> nn.Module:
    """What a phase that does not train `module` runs it through (the G phase's pass through D):
    its local (eager, un-DDP'd) module, compiled on its own under `train.compile`."""
    return torch.compile(module, backend=backend) if enabled else module


def local_unwrap(accelerator: Accelerator) -> Callable[[nn.Module], nn.Module]:
    """Accelerate's unwrap_model through compile and DDP down to the eager module.

    With its default `keep_torch_compile=True`, unwrapping `compile(DDP(module))` would put the
    bare module inside the compiled wrapper in place of DDP (and return the compiled wrapper)."""
    return partial(accelerator.unwrap_model, keep_torch_compile=False)
