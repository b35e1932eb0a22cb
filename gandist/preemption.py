"""Stopping a run gracefully: a signal or a stop file asks, every rank agrees on the step, all save.

Two ways to ask a training to checkpoint and exit:

- SIGTERM (or SIGUSR1) delivered to a training process. One rank receiving it is enough.
- The stop file named by `GANDIST_STOP_FILE` comes into existence. `slurm/train.sbatch` and
  `gandist train --num-processes N` create it when *they* receive USR1/TERM: the launcher agents
  (torchrun, accelerate launch) die on USR1 and give their workers only 30 s after a TERM, so a
  file that the ranks poll is the one request that reaches every rank intact.

Every `train.stop_check_every` steps the ranks all-reduce one flag, so they all stop after the
same step, save one checkpoint together and leave the loop. The main process then appends
`stopped at step N` to the stop file, which tells the batch script to requeue the job.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

import torch
from accelerate import Accelerator

log = logging.getLogger(__name__)

STOP_FILE_ENV = "GANDIST_STOP_FILE"
STOPPED_PREFIX = "stopped at step"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def stop_file_requests_stop(path: Path) -> bool:
    """A stop file asks for a stop while it exists and its last line is not a run's answer.

    Requests and answers are appended, so a file answered with `stopped at step N` is asked
    again by appending any line (or by deleting and re-creating it).
    """
    try:
        lines = path.read_text().splitlines()
    except (FileNotFoundError, IsADirectoryError):
        return False
    except OSError:
        return True  # it exists but cannot be read (e.g. being written): treat it as asked
    return not (lines and lines[-1].startswith(STOPPED_PREFIX))


class StopRequest:
    """Watches for a stop request (signals, stop file) and turns it into one agreed stop step.

    `install()` replaces the SIGTERM/SIGUSR1 handlers of this process (main thread only) until
    `close()`. A first signal only sets a flag; a second one of the same kind gets the previous
    handler (by default: the process dies), so an impatient operator can still kill the run.
    """

    def __init__(
        self, stop_file: str | os.PathLike | None = None, signals: Sequence[int] = STOP_SIGNALS
    ) -> None:
        self.stop_file = Path(stop_file) if stop_file else None
        self.signals = tuple(signals)
        self.received: str | None = None
        """Name of the first stop signal this process received, if any."""
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> StopRequest:
        return cls(env.get(STOP_FILE_ENV) or None)

    def install(self) -> StopRequest:
        if threading.current_thread() is not threading.main_thread():
            log.debug("not the main thread: stop signals are not handled, only the stop file")
            return self
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def close(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            # A forked DataLoader worker inherited the handler: it should just die as before.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        name = signal.Signals(signum).name
        if self.received == name:
            log.warning("second %s: stopping now, without a checkpoint", name)
            previous = self._previous.get(signum, signal.SIG_DFL)
            signal.signal(signum, previous)  # type: ignore[arg-type]
            os.kill(os.getpid(), signum)
            return
        self.received = self.received or name
        log.warning("%s received: checkpointing at the next agreed step, then exiting", name)

    def requested_locally(self) -> str | None:
        """Why this process wants to stop (a signal name or the stop file), or None."""
        if self.received:
            return self.received
        if self.stop_file is not None and stop_file_requests_stop(self.stop_file):
            return f"stop file {self.stop_file}"
        return None

    def agreed(self, accelerator: Accelerator) -> bool:
        """True on every rank when any rank was asked to stop; every rank must call it together.

        One all-reduce of a single number: cheap, but it waits for the slowest rank (and on a
        GPU for the queued work), which is why the loop calls it every `stop_check_every` steps.
        """
        local = self.requested_locally() is not None
        if accelerator.num_processes == 1:
            return local
        flag = torch.tensor([float(local)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    def acknowledge(self, step: int) -> None:
        """Record in the stop file that the run checkpointed and stopped (main process only)."""
        if self.stop_file is None:
            return
        self.stop_file.parent.mkdir(parents=True, exist_ok=True)
        with self.stop_file.open("a") as f:
            f.write(f"{STOPPED_PREFIX} {step}\n")


def run_forwarding_stop(command: list[str], env: Mapping[str, str] | None = None) -> int:
    """Run a launcher (`accelerate launch ...`) whose ranks stop gracefully on our TERM/USR1.

    The first TERM or USR1 writes the ranks' stop file instead of reaching the launcher's agent
    (which would give its workers 30 s, or die on USR1); a second one is passed on as TERM.
    Returns the launcher's exit code.
    """
    env = dict(os.environ if env is None else env)
    with tempfile.TemporaryDirectory(prefix="gandist-stop-") as tmp:
        stop_file = Path(env.setdefault(STOP_FILE_ENV, str(Path(tmp) / "stop")))
        child = subprocess.Popen(command, env=env)
        asked: list[str] = []

        def forward(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if asked:
                child.send_signal(signal.SIGTERM)
                return
            asked.append(name)
            with stop_file.open("a") as f:
                f.write(f"requested by {name}\n")

        previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
        try:
            return child.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
