"""Stuck data never hangs a run: an http shard that stops sending is resumed or skipped as bad
data (read timeout), and a data worker that stops producing ends the run with one clear error."""

from __future__ import annotations

import http.server
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gandist.data import remote
from gandist.data.config import DataConfig
from gandist.data.health import SkipCounter
from gandist.data.loader import DataStream, DataTimeoutError
from gandist.data.stream import ReadLimits, read_shard
from tests.conftest import GLYPHS_PER_SHARD


class StallingServer:
    """Serves one shard over http on 127.0.0.1; the first `stalls` responses send half of it
    and then go silent (until the test ends). Honours `Range: bytes=N-`."""

    def __init__(self, shard: bytes, stalls: int) -> None:
        self.shard, self.stalls, self.ranges = shard, stalls, []
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-") or 0)
                outer.ranges.append(start)
                body = outer.shard[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.stalls > 0:
                    outer.stalls -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    outer.release.wait(30)  # silent, connection open: a stalled transfer
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/shard-000000.tar"

    def __enter__(self) -> StallingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def shard_bytes(glyph_shards: Path) -> bytes:
    return sorted(glyph_shards.glob("*.tar"))[0].read_bytes()


@pytest.fixture(autouse=True)
def _short_retry_pause(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(remote, "RETRY_PAUSE_S", 0.05)
    yield


def test_a_stalled_http_shard_resumes_where_it_stopped_and_reads_every_sample(
    shard_bytes: bytes,
) -> None:
    handler = SkipCounter()
    with StallingServer(shard_bytes, stalls=1) as server:
        start = time.monotonic()
        samples = list(read_shard(server.url, handler, ReadLimits(read_timeout_s=0.5)))
        elapsed = time.monotonic() - start
    assert len(samples) == GLYPHS_PER_SHARD and handler.count == 0
    # The retry asked for the rest only: from the byte the stalled transfer had delivered.
    assert server.ranges[0] == 0 and 0 < server.ranges[1] <= len(shard_bytes) // 2
    assert elapsed < 10


def test_an_http_shard_that_keeps_stalling_is_skipped_as_bad_data_after_its_retries(
    shard_bytes: bytes,
) -> None:
    handler = SkipCounter()
    with StallingServer(shard_bytes, stalls=100) as server:
        start = time.monotonic()
        samples = list(
            read_shard(server.url, handler, ReadLimits(read_timeout_s=0.5, read_retries=2))
        )
        elapsed = time.monotonic() - start
    assert len(server.ranges) == 3  # the first read and 2 retries, then the shard is given up
    assert 0 < len(samples) < GLYPHS_PER_SHARD  # the samples before the stall are kept
    (skipped,) = handler.drain()
    assert skipped.url == server.url and "no data for 0.5 s" in skipped.reason
    assert "after 2 retries" in skipped.reason
    assert elapsed < 3 * 0.5 + 10


def test_a_data_worker_that_stops_producing_ends_the_run_with_one_clear_error(
    tmp_path: Path, glyph_shards: Path
) -> None:
    shard = sorted(glyph_shards.glob("*.tar"))[0]
    cfg = DataConfig(
        shards=f"pipe:sleep 20 && API_TOKEN=s3cr3t cat {shard}",
        num_workers=1,
        shuffle_buffer=0,
        timeout_s=2,
    )
    stream = DataStream(cfg, batch_size=4, rank=0, world_size=1, seed=0)
    start = time.monotonic()
    with pytest.raises(DataTimeoutError) as caught:
        stream.next_batch()
    elapsed = time.monotonic() - start
    message = str(caught.value)
    assert message.startswith("rank 0: no batch from its data workers in 2 s (data.timeout_s)")
    assert "API_TOKEN=***" in message and "s3cr3t" not in message
    assert elapsed < 2 + 15, elapsed  # worker start-up, then the timeout: never the 20 s sleep


ENDLESS_WRITER = """
import sys, tarfile
def header(name, kind, size=0):
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(format=tarfile.USTAR_FORMAT)
out = sys.stdout.buffer
if sys.argv[1] == "headers":  # one directory entry, over and over: never a file
    block = header("d/", tarfile.DIRTYPE) * 2048
    while True:
        out.write(block)
for i in range(10**12):  # "members": files of one sample, never its end
    out.write(header(f"s.{i}", tarfile.REGTYPE, 3) + b"abc" + bytes(509))
"""


@pytest.mark.parametrize(
    ("writer", "num_workers", "reason"),
    [
        ("sleep 1000", 0, "ShardReadError: pipe read stalled at byte 0: no data for 1 s"),
        ("sleep 1000", 1, "ShardReadError: pipe read stalled at byte 0: no data for 1 s"),
        ("headers", 0, "EndlessShardError: 1049088 bytes of tar entries without a file"),
        ("headers", 1, "EndlessShardError: 1049088 bytes of tar entries without a file"),
        ("members", 0, "EndlessShardError: more than 1024 members in a row for sample 's'"),
    ],
)
def test_a_pipe_shard_that_hangs_or_never_ends_is_skipped_as_bad_data_in_bounded_time(
    tmp_path: Path,
    glyph_shards: Path,
    monkeypatch: pytest.MonkeyPatch,
    writer: str,
    num_workers: int,
    reason: str,
) -> None:
    """A `pipe:` command that stops sending (`sleep`), or that writes forever without an end of
    archive (`yes`-like: the same tar header, or files of one sample, without end), ends in one
    named, counted skip within the read timeout and the reader's bounds, in the training process
    (num_workers=0) as in a worker; the good shard beside it is read in full."""
    from gandist.data import tar

    monkeypatch.setattr(tar, "MAX_BYTES_WITHOUT_FILE", 1 << 20)  # 16 MiB takes longer to write
    script = tmp_path / "endless.py"
    script.write_text(ENDLESS_WRITER)
    command = writer if writer.startswith("sleep") else f"{sys.executable} {script} {writer}"
    good = sorted(glyph_shards.glob("*.tar"))[0]
    cfg = DataConfig(
        shards=f"pipe:{command}::{good}", num_workers=num_workers, shuffle_buffer=0,
        read_timeout_s=1, read_retries=1, timeout_s=60,
    )  # fmt: skip
    # Seed 0 reads the pipe first in epoch 0 (`epoch_shares`), then the good shard.
    stream = DataStream(cfg, batch_size=4, rank=0, world_size=1, seed=0)
    start = time.monotonic()
    # (The good shard's last batch would read on into the next epoch, which starts with the pipe.)
    keys = [key for _ in range(GLYPHS_PER_SHARD // 4 - 1) for key in stream.next_batch()["key"]]
    elapsed = time.monotonic() - start
    assert len(set(keys)) == GLYPHS_PER_SHARD - 4
    # The shard, by URL (and for "members", the unfinished sample before it, by key).
    skipped = stream.counts.drain()
    assert stream.counts.num_skipped == len(skipped) == (2 if writer == "members" else 1)
    (shard,) = [reason for url, key, reason in skipped if (url, key) == (f"pipe:{command}", "")]
    assert shard.startswith(reason), skipped
    assert elapsed < 30, elapsed  # the read timeout twice, or ~1 MiB of tar entries
    if writer.startswith("sleep"):
        assert elapsed > 2  # a first read and one retry, each waited out
