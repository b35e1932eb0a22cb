"""Looking at shards: `verify` decodes every sample and names the bad ones, `inspect` summarises."""

from __future__ import annotations

import collections
import hashlib
import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from gandist.data import audio
from gandist.data.decode import AUDIO_KEYS, IMAGE_KEYS, decode_image, sample_label
from gandist.data.health import locate
from gandist.data.shards import (
    expand_shards,
    is_remote,
    read_manifest,
    redact_message,
    redact_shards,
)
from gandist.data.stream import read_shard


@dataclass
class Problem:
    """One bad shard or sample."""

    shard: str
    key: str
    reason: str

    def __str__(self) -> str:
        # URLs and pipe: commands may hold credentials; a pipe's error quotes its command.
        shard, reason = redact_shards(self.shard), redact_message(self.reason, self.shard)
        return shard + (f" key={self.key}" if self.key else "") + f": {reason}"


@dataclass
class ShardsReport:
    """What a pass over the shards found."""

    num_shards: int = 0
    num_samples: int = 0
    kinds: collections.Counter = field(default_factory=collections.Counter)
    labels: collections.Counter = field(default_factory=collections.Counter)
    problems: list[Problem] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)


def _raw_samples(url: str, problems: list[Problem]) -> Iterator[dict[str, Any]]:
    """The samples of one shard; tar errors (truncation, bad headers) become Problems."""

    def handler(exn: Exception) -> bool:
        problems.append(Problem(url, "", f"unreadable shard: {locate(exn).reason}"))
        return True

    yield from read_shard(url, handler)


def check_sample(sample: dict[str, Any], expect: dict[str, Any]) -> tuple[str, Any]:
    """Decode a raw sample fully; returns (kind, decoded) or raises ValueError saying why."""
    image_key = next((k for k in IMAGE_KEYS if k in sample), None)
    audio_key = next((k for k in AUDIO_KEYS if k in sample), None)
    if image_key is None and audio_key is None:
        present = ", ".join(k for k in sample if not k.startswith("__")) or "nothing"
        raise ValueError(f"no image or audio member; has {present}")
    try:
        label = sample_label(sample)
    except ValueError as err:
        raise ValueError(f"cls: not an integer label: {err}") from None
    if image_key is not None:
        try:
            image = decode_image(sample[image_key])
        except Exception as err:
            raise ValueError(f"{image_key}: {type(err).__name__}: {err}") from None
        side = expect.get("resolution")
        if side and image.size != (side, side):
            raise ValueError(
                f"{image_key}: {image.size[0]}x{image.size[1]} px, manifest says {side}"
            )
        return "image", (image, label)
    try:
        samples, rate = audio.decode(sample[audio_key])
    except ValueError as err:
        raise ValueError(f"{audio_key}: {err}") from None
    if expect.get("sample_rate") and rate != expect["sample_rate"]:
        raise ValueError(
            f"{audio_key}: sample rate {rate} Hz, manifest says {expect['sample_rate']}"
        )
    if expect.get("length") and len(samples) != expect["length"]:
        raise ValueError(f"{audio_key}: {len(samples)} samples, manifest says {expect['length']}")
    return "audio", (audio.to_mono(samples), label)


def _check_against_manifest(url: str, manifest: dict[str, Any] | None, count: int) -> list[Problem]:
    if manifest is None or is_remote(url):
        return []
    entry = next((s for s in manifest.get("shards", []) if s.get("name") == Path(url).name), None)
    if entry is None:
        return []
    problems = []
    size = Path(url).stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
        problems.append(Problem(url, "", f"{size} bytes, manifest says {entry['bytes']}"))
    if "sha256" in entry:
        digest = hashlib.sha256(Path(url).read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            problems.append(Problem(url, "", "SHA-256 differs from the manifest"))
    if "count" in entry and count != entry["count"]:
        problems.append(Problem(url, "", f"{count} good samples, manifest says {entry['count']}"))
    return problems


def scan_shards(
    spec: str, keep: int = 0, seed: int = 0
) -> tuple[ShardsReport, list[tuple[str, Any]]]:
    """Read and decode every sample of every shard; also returns `keep` decoded ones drawn
    uniformly from the whole set (reservoir sampling from `seed`), in the order they were read.
    """
    urls = expand_shards(spec)
    report = ShardsReport(num_shards=len(urls))
    rng = random.Random(seed)
    reservoir: list[tuple[int, tuple[str, Any]]] = []  # (index among good samples, sample)
    for url in urls:
        manifest = read_manifest(url)
        expect = manifest or {}
        if manifest and not report.classes:
            report.classes = list(manifest.get("classes", []))
        good = 0
        for sample in _raw_samples(url, report.problems):
            try:
                kind, decoded = check_sample(sample, expect)
            except ValueError as err:
                report.problems.append(Problem(url, sample.get("__key__", ""), str(err)))
                continue
            good += 1
            report.kinds[kind] += 1
            report.labels[decoded[1]] += 1
            index = report.num_samples + good - 1
            if len(reservoir) < keep:
                reservoir.append((index, (kind, decoded)))
            elif (slot := rng.randrange(index + 1)) < keep:
                reservoir[slot] = (index, (kind, decoded))
        report.num_samples += good
        report.problems += _check_against_manifest(url, manifest, good)
    return report, [item for _, item in sorted(reservoir, key=lambda pair: pair[0])]


def verify_shards(spec: str) -> ShardsReport:
    """Decode every sample; `report.problems` names each bad shard and key and why."""
    return scan_shards(spec)[0]


def contact_sheet(
    items: list[tuple[str, Any]], labels: list[str], tile_px: int = 96
) -> Image.Image:
    """A grid of images or log spectrograms, each captioned with its class."""
    columns = max(1, math.ceil(math.sqrt(len(items))))
    rows = max(1, math.ceil(len(items) / columns))
    caption_px = 12
    sheet = Image.new("RGB", (columns * tile_px, rows * (tile_px + caption_px)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (kind, (value, label)) in enumerate(items):
        if kind == "image":
            tile = value.convert("RGB")
        else:
            spec = audio.log_spectrogram(value)
            tile = Image.fromarray((spec * 255).astype(np.uint8)).convert("RGB")
        tile = tile.resize((tile_px, tile_px), Image.NEAREST if kind == "image" else Image.BILINEAR)
        x, y = (i % columns) * tile_px, (i // columns) * (tile_px + caption_px)
        sheet.paste(tile, (x, y))
        name = labels[label] if 0 <= label < len(labels) else ("-" if label < 0 else str(label))
        draw.text((x + 2, y + tile_px), name[:14], fill="black")
    return sheet


def inspect_shards(spec: str, out: str | Path | None, num: int = 64) -> ShardsReport:
    """Scan the shards (as `verify`) and write a contact sheet of `num` samples drawn from the
    whole set, so a folder written class by class still shows every class."""
    report, kept = scan_shards(spec, keep=num)
    if out is not None and kept:
        buffer = io.BytesIO()
        contact_sheet(kept, report.classes).save(buffer, format="PNG")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(buffer.getvalue())
    return report


def format_report(report: ShardsReport) -> str:
    """Counts per kind and class, as printed by `gandist data inspect`."""
    lines = [f"{report.num_shards} shards, {report.num_samples} good samples"]
    for kind, count in sorted(report.kinds.items()):
        lines.append(f"  {kind}: {count}")
    for label, count in sorted(report.labels.items()):
        name = report.classes[label] if 0 <= label < len(report.classes) else "(no label)"
        lines.append(f"  class {label:>3} {name}: {count}")
    if report.problems:
        lines.append(f"{len(report.problems)} problems (run `gandist data verify` for the list)")
    return "\n".join(lines)
