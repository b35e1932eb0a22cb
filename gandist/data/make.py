"""`gandist data make`: a folder of images or audio files (class sub-folders = labels) -> shards."""

from __future__ import annotations

import functools
import io
import math
import multiprocessing
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from gandist.data import audio
from gandist.data.shards import write_manifest, write_shards

IMAGE_SUFFIXES = frozenset(
    s for s, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
)
AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".w64", ".opus"}
)


TARGET_SHARDS = 64
"""Shards `auto_shard_size` aims for: each of up to 8 ranks x 8 loader workers reads its own."""
MIN_SHARD_SAMPLES = 16
"""Fewest samples per shard that `auto_shard_size` picks, so a small set is not split to crumbs."""
MAX_SHARD_SAMPLES = 1000
"""Most samples per shard that `auto_shard_size` picks; large sets get more shards instead."""


def auto_shard_size(num_files: int) -> int:
    """Samples per shard for `num_files` files: about TARGET_SHARDS shards, within the bounds.

    So 100 files give 7 shards, 300 give 19, 1,000 give 63, 10,000 give 64, 100,000 give 100.
    Exact-mode training reads each shard in one worker, so a set needs at least ranks x workers
    shards; more shards than that also spread the classes over the workers' shuffle buffers.
    """
    per_shard = math.ceil(num_files / TARGET_SHARDS)
    return min(MAX_SHARD_SAMPLES, max(MIN_SHARD_SAMPLES, per_shard))


@dataclass(frozen=True)
class MakeOptions:
    """How each file becomes one or more samples."""

    kind: str = "image"
    """`image` or `audio`."""
    size: int = 64
    """Images: side in pixels of the square output."""
    fit: str = "crop"
    """Images: `crop` (resize the short side, centre-crop) or `pad` (resize the long side, pad)."""
    channels: int = 3
    """Images: 3 for RGB, 1 for grayscale."""
    image_format: str = "png"
    """Images: `png` (lossless) or `jpg` (quality 95, smaller)."""
    sample_rate: int = 16000
    """Audio: output rate in Hz."""
    length: int = 16384
    """Audio: samples per clip."""
    windows: bool = False
    """Audio: cut long files into consecutive windows of `length` instead of one centre crop."""

    def __post_init__(self) -> None:
        if self.kind not in ("image", "audio"):
            raise ValueError(f"--kind must be image or audio, got {self.kind!r}")
        if self.fit not in ("crop", "pad"):
            raise ValueError(f"--fit must be crop or pad, got {self.fit!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"--channels must be 1 or 3, got {self.channels}")
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"--format must be png or jpg, got {self.image_format!r}")
        if self.size < 4 or self.sample_rate < 1 or self.length < 16:
            raise ValueError("--size must be >= 4, --sample-rate >= 1 and --length >= 16")


@dataclass
class MakeReport:
    """What `make_shards` wrote and what it skipped."""

    num_files: int = 0
    num_samples: int = 0
    shards: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path relative to the source folder, reason)."""
    classes: list[str] = field(default_factory=list)


def find_files(src: Path, kind: str) -> tuple[list[tuple[Path, int]], list[str]]:
    """Files of `kind` under `src` with their labels, in a deterministic order, and the classes.

    Sub-folders of `src` are classes (sorted by name, label = index) and are searched
    recursively; without sub-folders every file is unlabelled (-1). Hidden files are ignored.
    """
    suffixes = IMAGE_SUFFIXES if kind == "image" else AUDIO_SUFFIXES
    folders = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = [p.name for p in folders]
    roots = [(p, i) for i, p in enumerate(folders)] if folders else [(src, -1)]
    found = []
    for root, label in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in suffixes:
                found.append((path, label))
    return found, classes


def fit_image(image: Image.Image, size: int, fit: str, channels: int) -> Image.Image:
    """Convert to RGB or L, then resize + centre-crop (`crop`) or resize + centre-pad (`pad`)."""
    image = ImageOps.exif_transpose(image)
    image = image.convert("RGB" if channels == 3 else "L")
    if fit == "crop":
        return ImageOps.fit(image, (size, size), Image.LANCZOS)
    return ImageOps.pad(image, (size, size), Image.LANCZOS, color=0)


def convert_file(path: Path, label: int, options: MakeOptions) -> list[dict[str, Any]] | str:
    """One source file -> its samples (without keys), or the reason it cannot be used."""
    try:
        data = path.read_bytes()
        if not data:
            return "empty file"
        if options.kind == "image":
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                out = fit_image(image, options.size, options.fit, options.channels)
            buffer = io.BytesIO()
            if options.image_format == "png":
                out.save(buffer, format="PNG")
            else:
                out.save(buffer, format="JPEG", quality=95)
            media = [(options.image_format, buffer.getvalue())]
        else:
            samples, rate = audio.decode(data)
            clip = audio.resample(audio.to_mono(samples), rate, options.sample_rate)
            clips = (
                audio.windows(clip, options.length)
                if options.windows
                else [audio.crop_or_pad(clip, options.length)]
            )
            media = [("flac", audio.encode_flac(c, options.sample_rate)) for c in clips]
    except UnidentifiedImageError:
        return "not an image Pillow can read (unknown format)"
    except Exception as err:  # any reader error is this file's fault; report it and go on
        return f"{type(err).__name__}: {err}".strip()
    samples_out = []
    for ext, payload in media:
        sample: dict[str, Any] = {ext: payload}
        if label >= 0:
            sample["cls"] = label
        samples_out.append(sample)
    return samples_out


def _convert(item: tuple[Path, int], options: MakeOptions) -> list[dict[str, Any]] | str:
    return convert_file(item[0], item[1], options)


def make_shards(
    src: str | os.PathLike,
    out: str | os.PathLike,
    options: MakeOptions,
    *,
    prefix: str = "shard",
    max_count: int | None = None,
    max_bytes: int = 256 * 1024 * 1024,
    workers: int = 1,
    progress: bool = True,
    seed: int = 0,
) -> MakeReport:
    """Convert every file under `src` and write numbered shards and `manifest.json` to `out`.

    The files are shuffled across the whole set from `seed` before writing, so every shard
    holds a mix of all classes (class folders listed in order would give single-class shards
    and single-class batches). Files are converted in parallel but written in that order, so
    the same folder and seed always give the same shards. `max_count` None picks the shard
    size from the number of files (`auto_shard_size`). Unreadable or empty files are skipped
    and listed in the report and the manifest. Audio windows cut from one file stay together.
    """
    from tqdm.auto import tqdm

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ValueError(f"--from {src} is not a folder")
    files, classes = find_files(src, options.kind)
    if not files:
        raise ValueError(f"--from {src} holds no {options.kind} files")
    random.Random(seed).shuffle(files)
    if max_count is None:
        max_count = auto_shard_size(len(files))
    report = MakeReport(num_files=len(files), classes=classes)
    convert = functools.partial(_convert, options=options)

    def samples() -> Iterator[dict[str, Any]]:
        pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
        results = pool.imap(convert, files, chunksize=8) if pool else map(convert, files)
        try:
            bar = tqdm(results, total=len(files), desc=f"{options.kind}s", disable=not progress)
            for (path, _), result in zip(files, bar, strict=True):
                if isinstance(result, str):
                    report.skipped.append((str(path.relative_to(src)), result))
                    continue
                for sample in result:
                    sample["__key__"] = f"{report.num_samples:08d}"
                    sample["src.txt"] = str(path.relative_to(src))
                    report.num_samples += 1
                    yield sample
        finally:
            if pool:
                pool.terminate()

    report.shards = write_shards(samples(), out, prefix, max_count=max_count, max_bytes=max_bytes)
    info: dict[str, Any] = {"kind": options.kind, "count": report.num_samples, "seed": seed}
    if options.kind == "image":
        info |= {"resolution": options.size, "channels": options.channels, "fit": options.fit}
    else:
        info |= {"sample_rate": options.sample_rate, "length": options.length}
    info |= {
        "classes": classes,
        "source": str(src.resolve()),
        "files": report.num_files,
        "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
    }
    write_manifest(out, report.shards, **info)
    return report
