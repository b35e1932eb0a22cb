"""Drawing samples from a trained generator, without Accelerate or a process group."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from gandist.models import generate
from gandist.registry import MODELS
from gandist.rundir import CONFIG_FILE, load_generator_weights
from gandist.tracking import grid_to_uint8, image_grid, spectrogram_grid, write_clips
from gandist.training.config import Config, load_config

DEFAULT_GRID = "samples.png"
DEFAULT_CLIP_FOLDER = "samples"
SPECTROGRAM_SHEET = "spectrograms.png"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def load_generator(run_or_checkpoint: str | os.PathLike) -> tuple[nn.Module, Config]:
    """The generator of a run (its newest checkpoint) or of one checkpoint, in eval mode."""
    weights, folder = load_generator_weights(run_or_checkpoint)
    cfg = load_config(folder / CONFIG_FILE)
    if getattr(MODELS.get(cfg.model.name), "translator", False):
        raise ValueError(
            f"{run_or_checkpoint} is a model.name={cfg.model.name} run: its generators translate "
            "images instead of drawing from noise; use `gandist translate RUN --from DIR "
            "--direction ab|ba --out DIR`"
        )
    generator, _ = MODELS.get(cfg.model.name)(cfg.model, cfg.data.resolution, cfg.data.channels)
    generator.load_state_dict(weights)
    return generator.eval(), cfg


def class_labels(generator: nn.Module, num: int, class_index: int | None) -> torch.Tensor | None:
    """Labels [num] for a grid: all `class_index`, or every class in turn; None if unconditional.

    Raises ValueError for a class the generator does not have, or any class for an
    unconditional generator.
    """
    num_classes = int(getattr(generator, "num_classes", 0))
    if not num_classes:
        if class_index is not None:
            raise ValueError(
                f"--class {class_index} needs a class-conditional model; this one is unconditional"
            )
        return None
    if class_index is None:
        return torch.arange(num) % num_classes
    if not 0 <= class_index < num_classes:
        raise ValueError(
            f"--class must be in [0, {num_classes - 1}] for this model, got {class_index}"
        )
    return torch.full((num,), class_index, dtype=torch.long)


@torch.no_grad()
def draw(
    run_or_checkpoint: str | os.PathLike,
    num: int,
    seed: int = 0,
    class_index: int | None = None,
    truncation: float = 1.0,
) -> tuple[torch.Tensor, Config]:
    """`num` samples drawn with `seed` (images [B, C, H, W] or clips [B, 1, L] in [-1, 1]) and
    the run's config. Conditional models draw class `class_index`, or every class in turn;
    `truncation` < 1 applies the truncation trick (gandist.models.truncation)."""
    from gandist.models.truncation import check_psi

    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    check_psi(truncation)
    generator, cfg = load_generator(run_or_checkpoint)
    labels = class_labels(generator, num, class_index)
    latents = torch.randn(num, cfg.model.latent_dim, generator=torch.Generator().manual_seed(seed))
    return generate(generator, latents, labels, truncation), cfg


def sample_grid(
    run_or_checkpoint: str | os.PathLike,
    num: int,
    out: str | os.PathLike,
    seed: int = 0,
    class_index: int | None = None,
    truncation: float = 1.0,
) -> Path:
    """Write a grid of `num` samples drawn with `seed` to `out` (a PNG)."""
    images, _ = draw(run_or_checkpoint, num, seed, class_index, truncation)
    image_grid(images, out)
    return Path(out)


def clip_paths(folder: Path, num: int) -> list[Path]:
    return [folder / f"sample-{i:03d}.wav" for i in range(num)]


def write_samples(
    run_or_checkpoint: str | os.PathLike,
    num: int,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    class_index: int | None = None,
    truncation: float = 1.0,
) -> list[Path]:
    """`gandist sample`: an image run's grid at `out` (default samples.png), or for an audio run
    `num` WAV files at data.sample_rate and their spectrogram sheet in the folder `out`
    (default samples/). Returns the files written, the picture last."""
    samples, cfg = draw(run_or_checkpoint, num, seed, class_index, truncation)
    if cfg.data.kind != "audio":
        path = Path(out or DEFAULT_GRID)
        image_grid(samples, path)
        return [path]
    folder = Path(out or DEFAULT_CLIP_FOLDER)
    if folder.suffix.lower() in IMAGE_SUFFIXES or folder.is_file():
        raise ValueError(
            f"--out {folder}: this run makes audio, so --out names a folder for {num} WAV files "
            f"and {SPECTROGRAM_SHEET} (e.g. --out {folder.with_suffix('')})"
        )
    paths = clip_paths(folder, num)
    write_clips(samples, paths, cfg.data.sample_rate)
    spectrogram_grid(samples, folder / SPECTROGRAM_SHEET)
    return [*paths, folder / SPECTROGRAM_SHEET]


def real_against_generated(
    run_or_checkpoint: str | os.PathLike, num: int, out: str | os.PathLike, seed: int = 0
) -> Path:
    """A spectrogram sheet of an audio run: its first `num` real clips (the first of the sorted
    shards in data.shards) in the top row, `num` generated ones below, at `out` (a PNG)."""
    from gandist.metrics.sharded import Ranks, SampleFormat, real_samples

    clips, cfg = draw(run_or_checkpoint, num, seed)
    if cfg.data.kind != "audio":
        raise ValueError("--real compares spectrograms: it needs an audio run (data.kind=audio)")
    _, reals, _ = real_samples(cfg.data.shards, SampleFormat.of(cfg.data), num, Ranks(0, 1, "cpu"))
    real = torch.stack(list(reals))  # [N, 1, L]
    grid = spectrogram_grid(torch.cat([real, clips]), nrow=len(real))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid_to_uint8(grid)).save(out)
    return Path(out)
