"""Reads an offline wandb run file (`run-*.wandb`) so tests can assert on what was logged.

The file is a LevelDB-style log: a 7-byte header (`:W&B`, magic, version), then 32 KiB blocks
of chunks, each with a 7-byte header (crc32, length, type) holding a serialized protobuf Record.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk)
            pending = b""
            yield record
        elif kind in (FIRST, MIDDLE):
            pending += chunk


def run_files(run_dir: str | Path) -> list[Path]:
    """Offline run files under `run_dir/wandb/`, one per launch, oldest first.

    A resumed run writes a new folder per launch under the same run id; `wandb sync` merges them.
    """
    return sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))


def run_file(run_dir: str | Path) -> Path:
    """The single offline run file of a run launched once."""
    found = run_files(run_dir)
    assert len(found) == 1, f"expected one offline wandb run under {run_dir}, found {found}"
    return found[0]


def history(path: str | Path) -> list[dict[str, Any]]:
    """Every `wandb.log` row: {key: value}, including the `_step` key."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def run_ids(path: str | Path) -> set[str]:
    return {r.run.run_id for r in records(path) if r.WhichOneof("record_type") == "run"}


def wait_for_step(run_dir: str | Path, step: int, timeout_s: float = 20.0) -> list[int]:
    """Logged `_step`s of all launches, once `step` is on disk.

    wandb's service process may still be flushing the last records when `finish()` returns.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        steps = [row["_step"] for f in run_files(run_dir) for row in history(f)]
        if step in steps or time.monotonic() > deadline:
            return steps
        time.sleep(0.2)
