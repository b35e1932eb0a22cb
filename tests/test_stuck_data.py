"""Stuck data never hangs a run: an http shard that stops sending is resumed or skipped as bad
data (read timeout), and a data worker that stops producing ends the run with one clear error."""

from __future__ import annotations

import http.server
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
