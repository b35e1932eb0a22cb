"""`gandist export`: a trained generator as a folder others load without training code.

The folder has the layout of huggingface_hub's `PyTorchModelHubMixin` (`model.safetensors`,
`config.json`, a `README.md` model card), so `Generator.from_pretrained(folder)` loads it and
it can be pushed to a hub as it is; and `generator.pt2`, a `torch.export` program that plain
PyTorch loads and calls with latents (and labels) - no gandist needed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from gandist.checkpoint import SHARED_FILE
from gandist.models import generate
from gandist.models.config import ModelConfig
from gandist.registry import MODELS
from gandist.rundir import (
    BEST,
    CONFIG_FILE,
    find_checkpoint,
    generator_step,
    load_tensors,
    read_metrics,
    run_dir_of,
)
from gandist.training.config import load_config

PROGRAM_FILE = "generator.pt2"

MODEL_CARD = """---
{{ card_data }}
---

# {{ name }}

A {{ family }} generator trained with gandist on {{ kind }} data
({{ resolution_text }}), exported at step {{ step }}{{ fid_text }}. Weights: {{ weights }}.

It maps latents `z` of shape `[B, {{ latent_dim }}]` (standard normal){{ labels_text }} to
{{ output_text }} in [-1, 1].

## With plain PyTorch (no gandist)

```python
import torch

generator = torch.export.load("{{ program_file }}").module()
z = torch.randn(16, {{ latent_dim }})
{{ call_example }}
```

## With gandist

```python
from gandist.runs.export import Generator

generator = Generator.from_pretrained("path/to/this/folder")
images = generator(torch.randn(16, {{ latent_dim }}){{ labels_arg }})
```

## Training

```json
{{ training }}
```
"""


class Generator(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="gandist",
    tags=["gan", "gandist"],
    model_card_template=MODEL_CARD,
):
    """A gandist generator, rebuilt from its family's config: `Generator.from_pretrained(dir)`.

    Called with latents [B, latent_dim] (and class labels [B] for conditional families) it
    returns images [B, C, H, W] in [-1, 1]. Its constructor arguments are `config.json`.
    """

    def __init__(self, model: dict[str, Any], resolution: int, channels: int) -> None:
        super().__init__()
        cfg = ModelConfig(**model)
        self.generator, _ = MODELS.get(cfg.name)(cfg, resolution, channels)
        self.latent_dim = cfg.latent_dim
        self.num_classes = int(getattr(self.generator, "num_classes", 0))

    def forward(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return generate(self.generator, latents, labels)


def checkpoint_weights(folder: Path, raw: bool) -> dict[str, torch.Tensor]:
    """The generator a checkpoint evaluates (the EMA when there is one), or the trained one."""
    if not raw:
        return load_tensors(folder / "generator.pt")["generator"]
    shared = load_tensors(folder / SHARED_FILE)
    if not isinstance(shared, dict) or "network/generator" not in shared:
        raise ValueError(f"{folder / SHARED_FILE} holds no trained generator for --raw")
    return shared["network/generator"]


def export_program(generator: Generator, out: Path) -> Path:
    """`generator.pt2`: the generator in eval mode as a torch.export program whose batch size
    is dynamic; `torch.export.load(path).module()(latents[, labels])` runs it."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    latents = torch.randn(2, generator.latent_dim)
    if generator.num_classes:
        labels = torch.zeros(2, dtype=torch.long)
        args: tuple[torch.Tensor, ...] = (latents, labels)
        shapes: dict[str, Any] = {"latents": {0: batch}, "labels": {0: batch}}
    else:
        args, shapes = (latents,), {"latents": {0: batch}}
    with torch.no_grad():
        program = torch.export.export(generator, args, dynamic_shapes=shapes)
    path = out / PROGRAM_FILE
    torch.export.save(program, path)
    return path


def _training_facts(folder: Path, step: int) -> dict[str, Any]:
    rows = read_metrics(run_dir_of(folder))
    fids = [row["eval/fid"] for row in rows if "eval/fid" in row and row["step"] <= step]
    seen = [row["train/images_seen"] for row in rows if "train/images_seen" in row]
    facts: dict[str, Any] = {"checkpoint": folder.name, "step": step}
    if seen:
        facts["images_seen"] = seen[-1]
    if fids:
        facts["fid"] = fids[-1]
    if (folder / BEST).is_file():
        facts["best"] = json.loads((folder / BEST).read_text())
    return facts


def export_generator(
    run_or_checkpoint: str | os.PathLike, out: str | os.PathLike, raw: bool = False
) -> Path:
    """Write the export folder for a run (its newest checkpoint) or one checkpoint."""
    folder = find_checkpoint(run_or_checkpoint)
    cfg = load_config(folder / CONFIG_FILE)
    if cfg.data.kind != "image":
        raise ValueError(
            f"gandist export writes image generators; {folder} trained on data.kind={cfg.data.kind}"
        )
    generator = Generator(asdict(cfg.model), cfg.data.resolution, cfg.data.channels)
    generator.generator.load_state_dict(checkpoint_weights(folder, raw))
    generator.eval().requires_grad_(False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    step = generator_step(folder)
    facts = _training_facts(folder, step)
    conditional = generator.num_classes > 0
    generator.save_pretrained(
        out,
        model_card_kwargs={
            "name": f"{cfg.run_name} ({cfg.model.name})",
            "family": cfg.model.name,
            "kind": cfg.data.kind,
            "resolution_text": f"{cfg.data.resolution} px, {cfg.data.channels} channels",
            "step": step,
            "fid_text": f", FID {facts['fid']:.4g}" if "fid" in facts else "",
            "weights": (
                "the trained generator"
                if raw or cfg.train.ema_half_life_images <= 0
                else "the generator's exponential moving average (EMA)"
            ),
            "latent_dim": cfg.model.latent_dim,
            "labels_text": (
                f" and class labels of shape `[B]` in [0, {generator.num_classes - 1}]"
                if conditional
                else ""
            ),
            "output_text": f"images of shape `[B, {cfg.data.channels}, {cfg.data.resolution}, "
            f"{cfg.data.resolution}]`",
            "program_file": PROGRAM_FILE,
            "call_example": (
                f"labels = torch.randint(0, {generator.num_classes}, (16,))\n"
                "images = generator(z, labels)  # [16, C, H, W] in [-1, 1]"
                if conditional
                else "images = generator(z)  # [16, C, H, W] in [-1, 1]"
            ),
            "labels_arg": ", torch.arange(16) % " + str(generator.num_classes)
            if conditional
            else "",
            "training": json.dumps(facts, indent=2),
        },
    )
    export_program(generator, out)
    return out
