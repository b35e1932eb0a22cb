"""Writing WebDataset shards and resolving user shard specs to a list of URLs."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import braceexpand
import webdataset as wds

SHARD_SUFFIX = ".tar"
MANIFEST = "manifest.json"


REMOTE_PREFIXES = ("pipe:", "http://", "https://", "s3://", "gs://", "file:")
"""Shard URLs handed to WebDataset's gopen as they are (checked when read, not here)."""


def is_remote(url: str) -> bool:
    return url.startswith(REMOTE_PREFIXES)


def expand_shards(spec: str) -> list[str]:
    """Turn `data.shards` into a list of shard URLs.

    Accepts a folder (every `*.tar` in it, sorted), a single file, a brace pattern
    (`d/train-{000000..000009}.tar`), `pipe:COMMAND` (e.g. `pipe:aws s3 cp s3://b/x.tar -`) and
    http(s) URLs (braces expand there too), or several of these separated by `::`. Local paths
    must exist; URLs and pipes are opened when read. Raises ValueError when nothing matches.
    """
    urls: list[str] = []
    for part in spec.split("::"):
        for item in braceexpand.braceexpand(part):
            path = Path(item)
            if is_remote(item):
                urls.append(item)
            elif path.is_dir():
                urls += sorted(str(p) for p in path.glob(f"*{SHARD_SUFFIX}"))
            elif path.is_file():
                urls.append(str(path))
            else:
                raise ValueError(f"data.shards: {item!r} is neither a shard file nor a folder")
    if not urls:
        raise ValueError(f"data.shards={spec!r} matched no {SHARD_SUFFIX} files; {_hint(spec)}")
    return urls


RAW_AUDIO = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff"})
RAW_IMAGES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def _hint(spec: str) -> str:
    """What to do about a spec without shards: a folder of raw images or audio needs `data make`."""
    folder = Path(spec.split("::")[0])
    if folder.is_dir():
        found = (p for p in folder.rglob("*") if p.suffix.lower() in RAW_IMAGES | RAW_AUDIO)
        first = next(found, None)
        if first is not None:
            kind = "audio" if first.suffix.lower() in RAW_AUDIO else "image"
            out = folder.with_name(f"{folder.name}-shards")
            return (
                f"it holds {kind} files ({first.relative_to(folder)}): make shards from it with "
                f"`gandist data make --from {folder} --out {out} --kind {kind}` and set "
                f"data.shards={out}"
            )
    return (
        "make some from a folder with `gandist data make`, or `gandist data synth glyphs --out DIR`"
    )


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
    # A fixed member mtime makes the same samples give byte-identical shards (and checksums);
    # an int, because a float mtime makes tarfile add a PAX header to every member (2x parsing).
    with wds.ShardWriter(
        pattern, maxcount=max_count, maxsize=max_bytes, verbose=0, mtime=0
    ) as writer:
        for sample in samples:
            writer.write(sample)
    return sorted(str(p) for p in out.glob(f"{prefix}-*{SHARD_SUFFIX}"))


def shard_info(path: str | os.PathLike) -> dict[str, Any]:
    """Name, size in bytes, sample count and SHA-256 of one local shard."""
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    with tarfile.open(path) as tar:
        keys = {m.name.split("/")[-1].split(".", 1)[0] for m in tar.getmembers() if m.isreg()}
    return {
        "name": path.name,
        "bytes": path.stat().st_size,
        "count": len(keys),
        "sha256": digest.hexdigest(),
    }


def write_manifest(out_dir: str | os.PathLike, shards: list[str], **info: Any) -> Path:
    """Write `manifest.json` beside the shards: the given info plus each shard's name, size,
    sample count and SHA-256 (which `gandist data verify` checks)."""
    out = Path(out_dir)
    manifest = dict(info)
    manifest["shards"] = [shard_info(s) for s in shards]
    path = out / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)
    return path


def read_manifest(url: str) -> dict[str, Any] | None:
    """The manifest beside a local shard (or in a local folder), or None."""
    if is_remote(url):
        return None
    path = Path(url)
    path = path if path.is_dir() else path.parent
    try:
        return json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
