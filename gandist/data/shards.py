"""Writing WebDataset shards and resolving user shard specs to a list of URLs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import braceexpand
import webdataset as wds

SHARD_SUFFIX = ".tar"
MANIFEST = "manifest.json"


def expand_shards(spec: str) -> list[str]:
    """Turn `data.shards` into a sorted list of shard URLs.

    Accepts a folder (every `*.tar` in it), a single file, a brace pattern
    (`d/train-{000000..000009}.tar`) or several of these separated by `::`.
    Raises ValueError when nothing matches, naming the spec.
    """
    urls: list[str] = []
    for part in spec.split("::"):
        for item in braceexpand.braceexpand(part):
            path = Path(item)
            if path.is_dir():
                urls += sorted(str(p) for p in path.glob(f"*{SHARD_SUFFIX}"))
            elif path.is_file():
                urls.append(str(path))
            else:
                raise ValueError(f"data.shards: {item!r} is neither a shard file nor a folder")
    if not urls:
        raise ValueError(
            f"data.shards={spec!r} matched no {SHARD_SUFFIX} files; "
            "make some with `gandist data synth glyphs --out DIR` or point it at your shards"
        )
    return urls


def write_shards(
    samples: Iterable[dict[str, Any]],
    out_dir: str | os.PathLike,
    prefix: str,
    max_count: int = 1000,
    max_bytes: int = 256 * 1024 * 1024,
) -> list[str]:
    """Write samples (dicts with `__key__` and one entry per file extension) into numbered shards.

    Returns the written shard paths. Existing shards with the same prefix are replaced.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{prefix}-*{SHARD_SUFFIX}"):
        old.unlink()
    pattern = str(out / f"{prefix}-%06d{SHARD_SUFFIX}")
    # A fixed member mtime makes the same samples give byte-identical shards (and checksums).
    with wds.ShardWriter(
        pattern, maxcount=max_count, maxsize=max_bytes, verbose=0, mtime=0.0
    ) as writer:
        for sample in samples:
            writer.write(sample)
    return sorted(str(p) for p in out.glob(f"{prefix}-*{SHARD_SUFFIX}"))


def write_manifest(out_dir: str | os.PathLike, shards: list[str], **info: Any) -> Path:
    """Write `manifest.json` beside the shards: the given info plus each shard's name and size."""
    out = Path(out_dir)
    manifest = dict(info)
    manifest["shards"] = [{"name": Path(s).name, "bytes": Path(s).stat().st_size} for s in shards]
    path = out / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)
    return path
