"""One job per run directory: the main process holds an exclusive lock on `run.lock` while it trains.

Two jobs in one run directory (a job resubmitted while the first still runs) would prune each
other's temporary saves and interleave their checkpoints. The lock is a POSIX record lock
(`fcntl.lockf`) on a file descriptor kept open for the run's life, so the kernel releases it when
the holder dies, however it dies: a lock left by a dead job is simply taken over (the file's
text, `host pid start`, is only there to name the holder in the refusal). Not `flock`: a flock
is shared by every process forked while it is held (the DataLoader workers), so it would
outlive the training process by as long as they do; a POSIX lock belongs to its process alone,
and it is the kind NFS servers enforce across hosts.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import torch
from accelerate import Accelerator

from gandist.distributed import watch_ranks
from gandist.rundir import lock_path

log = logging.getLogger(__name__)


class RunLockedError(RuntimeError):
    """Another job holds the run directory."""


class RunLock:
    """The exclusive lock of one run directory, held from `acquire()` to `release()`."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = lock_path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise RunLockedError naming the job that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "an unnamed job"
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is in use by another job ({holder}); wait for it to end, "
                "or train in another output_dir"
            ) from None
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if previous:
            log.info("run directory lock: took over from %s, which is no longer running", previous)
        started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"host {socket.gethostname()} pid {os.getpid()} since {started}\n".encode(), 0
        )
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # a clean end leaves no holder to name
        os.close(self._fd)  # closing the descriptor releases the lock
        self._fd = None


def lock_run_dir(accelerator: Accelerator, run_dir: str | os.PathLike) -> RunLock:
    """The main process takes the run directory's lock; every rank raises RunLockedError
    together when it cannot (so no rank waits in a collective for one that stopped).
    Returns the lock (on ranks other than the main one, one that holds nothing)."""
    lock, error = RunLock(run_dir), None
    if accelerator.is_main_process:
        try:
            lock.acquire()
        except RunLockedError as err:
            error = err
    if accelerator.num_processes > 1:
        flag = torch.tensor([float(error is not None)], device=accelerator.device)
        if accelerator.reduce(flag, reduction="sum").item() > 0 and error is None:
            error = RunLockedError(f"{Path(run_dir)} is in use by another job (see rank 0)")
    if error is not None:
        raise error
    return lock


@contextlib.contextmanager
def exclusive_run(accelerator: Accelerator, run_dir: str | os.PathLike) -> Iterator[None]:
    """Train inside: the run directory locked for this job (`lock_run_dir`), and a collective
    that fails because a rank was lost turned into RankLostError naming it (`watch_ranks`)."""
    lock = lock_run_dir(accelerator, run_dir)
    try:
        with watch_ranks():
            yield
    finally:
        lock.release()
