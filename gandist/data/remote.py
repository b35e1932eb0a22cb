"""Reading remote shards (http(s) URLs, `pipe:` commands) with a read timeout: a stalled transfer
resumes where it stopped (a stalled command starts again), a few times, then the shard fails
with a named error (and is counted as bad data, like any other)."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import logging
import os
import select
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

log = logging.getLogger(__name__)

RETRY_PAUSE_S = 1.0
"""Pause before the first retry of a failed read; it doubles with each further retry."""


class ShardReadError(OSError):
    """A remote shard whose transfer stalled or failed more often than `retries` allows, or
    whose `pipe:` command failed."""


def http_request(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
    """A urllib request for `url`, with the `user:password@` of the URL (which urllib ignores)
    sent as HTTP basic authentication instead."""
    parts = urllib.parse.urlsplit(url)
    headers = dict(headers or {})
    if parts.username is not None:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        url = parts._replace(netloc=netloc).geturl()
        token = (
            f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        )
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    return urllib.request.Request(url, method=method, headers=headers)


# Client errors that a retry cannot mend; anything else (timeouts, resets, 5xx, 408, 429) may pass.
PERMANENT_STATUS = frozenset(range(400, 500)) - {408, 425, 429}


class HttpShard(io.RawIOBase):
    """A readable stream of one http(s) URL in which no single read waits more than
    `read_timeout_s` for a byte. A read that stalls or breaks is retried up to `retries` times,
    each retry continuing at the byte it stopped at (an HTTP Range request; from the start,
    skipping what was read, where the server ignores ranges); then ShardReadError."""

    def __init__(self, url: str, read_timeout_s: float, retries: int) -> None:
        super().__init__()
        self.url, self.read_timeout_s, self.retries = url, read_timeout_s, retries
        self.offset = 0  # bytes handed to the reader so far
        self.failures = 0
        self._response: Any = None

    def readable(self) -> bool:
        return True

    def _open(self) -> Any:
        headers = {"Range": f"bytes={self.offset}-"} if self.offset else {}
        request = http_request(self.url, headers=headers)
        response = urllib.request.urlopen(request, timeout=self.read_timeout_s)
        if self.offset and response.status != 206:  # the whole file again: skip what was read
            left = self.offset
            while left:
                piece = response.read(min(left, 1 << 20))
                if not piece:
                    raise http.client.IncompleteRead(b"", left)
                left -= len(piece)
        return response

    def readinto(self, buffer: Any) -> int:
        while True:
            try:
                if self._response is None:
                    self._response = self._open()
                # read1: what one receive brings, so bytes that arrived before a stall are
                # handed on (and not asked for again) rather than lost with a half-filled buffer.
                data = self._response.read1(len(buffer))
                buffer[: len(data)] = data
                self.offset += len(data)
                return len(data)
            except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets
                self._drop()
                self._retry_or_raise(err)

    def _retry_or_raise(self, err: Exception) -> None:
        status = err.code if isinstance(err, urllib.error.HTTPError) else None
        if isinstance(err, TimeoutError) or "timed out" in str(err):
            what = f"no data for {self.read_timeout_s:g} s"
        elif status is not None:
            what = f"HTTP {status} {err.reason}"
        else:
            what = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
        if status in PERMANENT_STATUS:
            raise ShardReadError(f"http read failed: {what}") from None
        self.failures += 1
        if self.failures > self.retries:
            raise ShardReadError(
                f"http read failed at byte {self.offset}: {what} (after {self.retries} "
                "retries; data.read_timeout_s, data.read_retries)"
            ) from None
        log.info("http shard read: %s at byte %d; retrying (%d)", what, self.offset, self.failures)
        time.sleep(RETRY_PAUSE_S * 2 ** (self.failures - 1))

    def _drop(self) -> None:
        if self._response is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close too
                self._response.close()
            self._response = None

    def close(self) -> None:
        self._drop()
        super().close()


def open_http_shard(url: str, read_timeout_s: float, retries: int) -> io.BufferedReader:
    """A buffered reader over `HttpShard` (reads of any size, each bounded by the timeout)."""
    return io.BufferedReader(HttpShard(url, read_timeout_s, retries), buffer_size=1 << 16)


class PipeShard(io.RawIOBase):
    """The standard output of one `pipe:` command, in which no single read waits more than
    `read_timeout_s` for a byte.

    WebDataset's pipe reads with no timeout at all: a command that hangs (a stuck mount, a
    network copy that stops sending) would hold the reader forever, and its `close` waits up to
    two hours for the command to end. Here a read that stalls kills the command (its whole
    process group) and starts it again, skipping the bytes already handed on, up to `retries`
    times; then ShardReadError. A command that ends with a non-zero status is a ShardReadError
    too (the message names the status, never the command: it may hold credentials). Closing
    the stream early kills what is left of the command.
    """

    def __init__(self, command: str, read_timeout_s: float, retries: int) -> None:
        super().__init__()
        self.command, self.read_timeout_s, self.retries = command, read_timeout_s, retries
        self.offset = 0  # bytes handed to the reader so far
        self.failures = 0
        self._proc: subprocess.Popen | None = None

    def readable(self) -> bool:
        return True

    def _start(self) -> subprocess.Popen:
        proc = subprocess.Popen(
            self.command,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            process_group=0,  # its own group: a stalled command is killed with its children
        )
        self._proc = proc
        left = self.offset  # a restart: the command's output again, from its first byte
        while left:
            piece = self._read_some(min(left, 1 << 20))
            if not piece:
                raise ShardReadError(
                    f"pipe command ended after {self.offset - left} bytes when restarted, "
                    f"{self.offset} had been read"
                )
            left -= len(piece)
        return proc

    def _read_some(self, size: int) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], self.read_timeout_s)
        if not ready:
            raise TimeoutError(f"no data for {self.read_timeout_s:g} s")
        return os.read(fd, size)

    def readinto(self, buffer: Any) -> int:
        while True:
            try:
                if self._proc is None:
                    self._start()
                data = self._read_some(len(buffer))
            except TimeoutError as err:
                self._kill()
                self._retry_or_raise(err)
                continue
            if not data:
                self._check_exit()
                return 0
            buffer[: len(data)] = data
            self.offset += len(data)
            return len(data)

    def _retry_or_raise(self, err: Exception) -> None:
        self.failures += 1
        if self.failures > self.retries:
            raise ShardReadError(
                f"pipe read stalled at byte {self.offset}: {err} (after {self.retries} "
                "retries; data.read_timeout_s, data.read_retries)"
            ) from None
        log.info("pipe shard read: %s at byte %d; restarting (%d)", err, self.offset, self.failures)
        time.sleep(RETRY_PAUSE_S * 2 ** (self.failures - 1))

    def _check_exit(self) -> None:
        """At the end of the output: the command's exit status (waiting `read_timeout_s` for a
        command that closed its output but goes on running, which is then killed)."""
        assert self._proc is not None
        try:
            status = self._proc.wait(self.read_timeout_s)
        except subprocess.TimeoutExpired:
            self._kill()
            return
        if status != 0:
            what = f"signal {-status}" if status < 0 else f"status {status}"
            raise ShardReadError(f"pipe command failed: exit {what} after {self.offset} bytes")

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
        proc.wait()

    def close(self) -> None:
        self._kill()
        super().close()


def open_pipe_shard(command: str, read_timeout_s: float, retries: int) -> io.BufferedReader:
    """A buffered reader over `PipeShard` (reads of any size, each bounded by the timeout)."""
    return io.BufferedReader(PipeShard(command, read_timeout_s, retries), buffer_size=1 << 16)
