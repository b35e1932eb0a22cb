"""`gandist translate RUN --from DIR_OR_SHARDS --direction ab|ba --out DIR`: a CycleGAN's
translations of a folder of images or of shards, written as PNG files."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gandist.data.health import BadSample, SkipCounter
from gandist.data.make import IMAGE_SUFFIXES, fit_image
from gandist.data.shards import SHARD_SUFFIX, expand_shards, is_remote
from gandist.data.stream import read_shard
from gandist.metrics.sharded import SampleFormat
from gandist.models.cyclegan import TranslatorPair, build_pair
from gandist.registry import MODELS
from gandist.rundir import CONFIG_FILE, load_generator_weights
from gandist.tracking import grid_to_uint8
from gandist.training.config import Config, load_config

DIRECTIONS = ("ab", "ba")


def load_translators(run_or_checkpoint: str | os.PathLike) -> tuple[TranslatorPair, Config]:
    """Both translators of a CycleGAN run (its newest checkpoint) or checkpoint, in eval mode."""
    weights, folder = load_generator_weights(run_or_checkpoint)
    cfg = load_config(folder / CONFIG_FILE)
    if not getattr(MODELS.get(cfg.model.name), "translator", False):
        raise ValueError(
            f"{run_or_checkpoint} holds a model.name={cfg.model.name} generator, which draws "
            "from noise: `gandist translate` needs a run of train.algorithm=cyclegan (use "
            "`gandist sample` for this one)"
        )
    pair = build_pair(cfg.model, cfg.data.resolution, cfg.data.channels)
    pair.load_state_dict(weights)
    return pair.eval(), cfg


def _is_image_folder(source: Path) -> bool:
    return source.is_dir() and not any(source.glob(f"*{SHARD_SUFFIX}"))


def source_images(source: str, cfg: Config) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, image [C, R, R] in [-1, 1]) for each image of `source`: a folder of image files
    (searched recursively; each centre-cropped to the run's resolution) or anything data.shards
    accepts (each sample named by its key). Unreadable files and samples are skipped."""
    resolution, channels = cfg.data.resolution, cfg.data.channels
    path = Path(source)
    if not is_remote(source) and _is_image_folder(path):
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise ValueError(f"--from {source}: no image files and no {SHARD_SUFFIX} shards in it")
        for file in files:
            try:
                with Image.open(file) as image:
                    pixels = np.asarray(fit_image(image, resolution, "crop", channels))
            except (OSError, UnidentifiedImageError):
                continue
            pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
            name = str(file.relative_to(path).with_suffix(""))
            yield name, torch.from_numpy(pixels.copy()).float() / 127.5 - 1.0
        return
    try:
        urls = expand_shards(source)
    except ValueError as err:
        raise ValueError(f"--from {source}: {err}") from None
    fmt = SampleFormat("image", resolution, channels)
    handler = SkipCounter()
    for sample in itertools.chain.from_iterable(read_shard(url, handler) for url in urls):
        try:
            pixels = fmt.decode(sample)  # uint8 [3, R, R] (grayscale repeated)
        except BadSample:
            continue
        yield str(sample["__key__"]), pixels[:channels].float() / 127.5 - 1.0


@torch.no_grad()
def translate(
    run_or_checkpoint: str | os.PathLike,
    source: str,
    direction: str,
    out: str | os.PathLike,
    batch_size: int = 32,
) -> int:
    """Translate every image of `source` (A -> B for `ab`) into `out`/<name>.png; returns the count."""
    if direction not in DIRECTIONS:
        raise ValueError(f"--direction must be ab or ba, got {direction!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    pair, cfg = load_translators(run_or_checkpoint)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pair.to(device)
    out = Path(out)
    count = 0
    images = source_images(source, cfg)
    while chunk := list(itertools.islice(images, batch_size)):
        names, batch = zip(*chunk, strict=True)
        translated = pair(torch.stack(batch).to(device), direction).float().cpu()
        for name, image in zip(names, translated, strict=True):
            target = out / f"{name}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            pixels = grid_to_uint8((image.clamp(-1, 1) + 1) / 2)  # [R, R, C] uint8
            Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(target)
            count += 1
    if count == 0:
        raise ValueError(f"--from {source}: no readable image in it")
    return count
