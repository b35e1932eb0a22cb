"""Writing WebDataset shards, resolving user shard specs to URLs, naming them safely in logs,
and telling (cheaply) whether a shard's contents changed."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import re
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import braceexpand
import webdataset as wds

from gandist.data.remote import http_request

SHARD_SUFFIX = ".tar"
MANIFEST = "manifest.json"


REMOTE_PREFIXES = ("pipe:", "http://", "https://", "s3://", "gs://", "file:")
"""Shard URLs handed to WebDataset's gopen as they are (checked when read, not here)."""


log = logging.getLogger(__name__)


def is_remote(url: str) -> bool:
    return url.startswith(REMOTE_PREFIXES)


# ---- credentials out of logs -------------------------------------------------------------

REDACTED = "***"
# Query parameters and command-line options whose values are secrets (signed URLs included).
_SECRET_NAME = (
    r"(?:[\w-]*(?:token|secret|passw(?:or)?d|passwd|pwd|api[_-]?key|access[_-]?key|auth\w*"
    r"|credential|signature|sig|session)[\w-]*|key|x-amz-[\w-]+|x-goog-[\w-]+)"
)
_URL = re.compile(r"\b([a-z][a-z0-9+.-]*://)([^\s'\"/?#]*@)?([^\s'\"?#]*)(\?[^\s'\"#]*)?", re.I)
_QUERY_SECRET = re.compile(rf"(?i)(^|[?&;]){_SECRET_NAME}=[^&;#]*")
_HEADER_SECRET = re.compile(
    r"(?i)((?:authorization|proxy-authorization|cookie|[\w-]*(?:token|key|secret|auth)[\w-]*)"
    r"\s*:\s*)[^'\"\n]+"
)
_OPTION_SECRET = re.compile(rf"(?i)((?:^|\s)--?{_SECRET_NAME}(?:=|\s+))('[^']*'|\"[^\"]*\"|\S+)")
# Environment assignments: upper-case names only, so `key=7` in a sample's name stays.
_ENV_SECRET = re.compile(
    r"((?:^|[\s;&|(:'\"])[A-Z0-9_]*(?:TOKEN|SECRET|PASSWORD|PASSWD|KEY|AUTH|CREDENTIAL|SESSION)"
    r"[A-Z0-9_]*=)('[^']*'|\"[^\"]*\"|\S+)"
)
_CURL_USER = re.compile(r"((?:^|\s)(?:-u|--user)(?:=|\s+))('[^']*'|\"[^\"]*\"|\S+)")


def _redact_url(match: re.Match) -> str:
    scheme, userinfo, rest, query = match.group(1, 2, 3, 4)
    if userinfo:
        user = userinfo[:-1].split(":", 1)[0]
        userinfo = f"{user}:{REDACTED}@" if ":" in userinfo else f"{REDACTED}@"
    if query:
        query = _QUERY_SECRET.sub(lambda m: m.group(0).split("=", 1)[0] + "=" + REDACTED, query)
    return f"{scheme}{userinfo or ''}{rest}{query or ''}"


def redact_shards(spec: str) -> str:
    """`data.shards` (or one shard URL) with its credentials replaced by `***`, for logs, run
    records and trackers: the password of `user:pass@` URLs, secret-named query values
    (`?token=`, `X-Amz-Signature=`, `sig=`, ...), and in `pipe:` commands also header values
    (`-H 'Authorization: Bearer ...'`), secret-named options and environment assignments
    (`--token X`, `AWS_SECRET_ACCESS_KEY=X`) and curl's `-u user:pass`. Paths are kept as they are.
    """
    parts = []
    for part in spec.split("::"):
        part = _URL.sub(_redact_url, part)
        if "pipe:" in part:  # a command, or a message quoting one
            part = _HEADER_SECRET.sub(lambda m: m.group(1) + REDACTED, part)
            part = _OPTION_SECRET.sub(lambda m: m.group(1) + REDACTED, part)
            part = _ENV_SECRET.sub(lambda m: m.group(1) + REDACTED, part)
            part = _CURL_USER.sub(lambda m: m.group(1) + REDACTED, part)
        parts.append(part)
    return "::".join(parts)


def redact_message(text: str, url: str) -> str:
    """A message about shard `url` with the URL's credentials redacted wherever it quotes the
    URL or, for `pipe:` shards, the bare command (as a failed pipe's error does)."""
    if not url:
        return redact_shards(text)
    redacted = redact_shards(url)
    if url.startswith("pipe:"):
        text = text.replace(url[len("pipe:") :], redacted[len("pipe:") :])
    return redact_shards(text.replace(url, redacted))


# ---- what a shard's contents are known by (reference-statistics cache keys) --------------

HEAD_TIMEOUT_S = 3.0
HEAD_BUDGET_S = 30.0  # all HEAD requests of one spec together; later shards key on the URL alone
HEAD_THREADS = 16


def _http_head(url: str, timeout_s: float) -> list[Any]:
    """[size, ETag, Last-Modified] as a HEAD request tells them (None where it does not)."""
    request = http_request(url, method="HEAD")  # with the URL's user:password, if any
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        headers = response.headers
        size = headers.get("Content-Length")
        return [int(size) if size and size.isdigit() else None, headers.get("ETag"),
                headers.get("Last-Modified")]  # fmt: skip


def shard_identities(urls: list[str], head_timeout_s: float = HEAD_TIMEOUT_S) -> list[list[Any]]:
    """What each shard's contents are known by, without reading them: a local file by its
    resolved path, size and modification time; an http(s) shard by its URL (credentials
    redacted) and the size, ETag and Last-Modified of a HEAD request when the server answers
    within `head_timeout_s` (in parallel, at most HEAD_BUDGET_S in all); any other remote shard
    (`pipe:` commands, s3://, gs://) by its redacted URL alone, so changed contents behind an
    unchanged command are not noticed."""
    identities: list[list[Any] | None] = [None] * len(urls)
    web: dict[int, str] = {}
    for index, url in enumerate(urls):
        path = url
        if url.startswith("file:"):  # file:///abs/path (a URL) or file:rel/path (as gopen reads it)
            path = (
                urllib.parse.unquote(urllib.parse.urlsplit(url).path)
                if url.startswith("file://")
                else url[5:]
            )
        if url.startswith(("http://", "https://")):
            web[index] = url
        elif is_remote(url) and not url.startswith("file:"):
            identities[index] = [redact_shards(url)]
        else:
            stat = Path(path).stat()
            identities[index] = [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]
    if web:
        deadline = time.monotonic() + HEAD_BUDGET_S
        unanswered = 0
        with concurrent.futures.ThreadPoolExecutor(min(HEAD_THREADS, len(web))) as pool:
            futures = {i: pool.submit(_http_head, url, head_timeout_s) for i, url in web.items()}
            for index, future in futures.items():
                try:
                    answer = future.result(timeout=max(0.0, deadline - time.monotonic()))
                except Exception:  # noqa: BLE001 - no answer: the URL alone keys the shard
                    future.cancel()
                    answer, unanswered = [], unanswered + 1
                identities[index] = [redact_shards(web[index]), *answer]
        if unanswered:
            log.warning(
                "%d of %d http(s) shards gave no HEAD answer within %.0f s: keyed by URL alone",
                unanswered, len(web), head_timeout_s,
            )  # fmt: skip
    return identities  # type: ignore[return-value]


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
                raise ValueError(
                    f"data.shards: {redact_shards(item)!r} is neither a shard file nor a folder"
                )
    if not urls:
        raise ValueError(
            f"data.shards={redact_shards(spec)!r} matched no {SHARD_SUFFIX} files; {_hint(spec)}"
        )
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
