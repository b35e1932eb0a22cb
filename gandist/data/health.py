"""Bad data: what the stream skipped and why, per-rank counts, and the verdict that stops a run."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gandist.data.shards import redact_message

log = logging.getLogger(__name__)


@dataclass
class Skipped:
    """One sample or shard the stream could not use."""

    url: str
    key: str
    reason: str

    def __str__(self) -> str:  # shard URLs may hold credentials: never printed as they are
        return redact_message(f"{self.url} key={self.key or '?'}: {self.reason}", self.url)


class BadSample(ValueError):
    """A sample that was read but cannot be used; names its shard (credentials redacted) and key."""

    def __init__(self, url: str, key: str, reason: str) -> None:
        super().__init__(redact_message(f"{url} key={key}: {reason}", url))
        self.url, self.key, self.reason = url, key, reason


def locate(exn: Exception) -> Skipped:
    if isinstance(exn, BadSample):
        return Skipped(exn.url, exn.key, exn.reason)
    # WebDataset appends the shard URL (and sometimes the stream) to a tar error's args, or
    # names the open file in the message (`... @ <_io.BufferedReader name='x.tar'>`).
    args = list(getattr(exn, "args", ()))
    strings = [a for a in args[1:] if isinstance(a, str)]
    message = str(args[0]) if args else ""
    found = re.search(r" @ <.*name='([^']+)'.*>$", message)
    url = strings[-1] if strings else (found.group(1) if found else "")
    message = message[: found.start()] if found else message
    return Skipped(url, "", f"{type(exn).__name__}: {message}".strip())


class UnreadableDataError(RuntimeError):
    """The stream read shard after shard without a single good sample."""


class SkipCounter:
    """A WebDataset handler that skips a bad sample or shard, records where and why, and goes on.

    Unlike `wds.warn_and_continue`, it does not sleep on every bad sample. What it records is
    handed on with the next batch (`drain`), so the training process sees it even when the
    stream runs in a DataLoader worker.
    """

    def __init__(self) -> None:
        self.count = 0
        self.pending: list[Skipped] = []

    def __call__(self, exn: Exception) -> bool:
        if isinstance(exn, UnreadableDataError):
            return False  # not a bad sample: the end of the road
        skipped = locate(exn)
        if self.pending and self.pending[-1] == skipped:
            return True  # the same tar error, passed up through a second WebDataset layer
        self.count += 1
        self.pending.append(skipped)
        log.warning("skipped bad data (%d so far): %s", self.count, skipped)
        return True

    def drain(self) -> list[Skipped]:
        pending, self.pending = self.pending, []
        return pending


@dataclass
class DataHealth:
    """Bad-data accounting of one rank: what the stream skipped, out of how much it read."""

    num_skipped: int = 0
    num_read: int = 0
    pending: list[list[str]] = field(default_factory=list)
    """Skipped [url, key, reason] not yet reported to the trackers."""

    def track(self, batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Pass batches through, taking off and counting their skip reports."""
        for batch in batches:
            skipped = batch.pop("skipped", [])
            self.num_skipped += len(skipped)
            self.num_read += int(batch.pop("num_read", 0))
            self.pending += skipped
            yield batch

    def drain(self) -> list[list[str]]:
        pending, self.pending = self.pending, []
        return pending


class BadDataError(RuntimeError):
    """More of the stream was bad than `data.max_bad_fraction` allows; raised on every rank.

    `values` holds the health metrics of the step that failed (`DataStream.health`), so the
    caller can log them before the run stops.
    """

    def __init__(self, message: str, values: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.values = values or {}


def check_bad_fraction(num_skipped: int, num_read: int, max_fraction: float, example: str) -> None:
    """Raise BadDataError when `num_skipped / num_read` exceeds `max_fraction`.

    Called with counts summed over all ranks, so every rank reaches the same verdict and none
    is left waiting in a collective for a rank that stopped.
    """
    if num_read and num_skipped / num_read > max_fraction:
        raise BadDataError(
            f"{num_skipped} of {num_read} samples read were bad ({num_skipped / num_read:.1%} > "
            f"data.max_bad_fraction={max_fraction:g}); e.g. {example or 'see the log'}. "
            "Find them all with `gandist data verify SHARDS`"
        )
