"""Stopping a run gracefully: a signal or a stop file asks, every rank agrees on the step, all save.

Two ways to ask a training to checkpoint and exit:

- SIGTERM (or SIGUSR1, or SIGINT: Ctrl-C) delivered to a training process. One rank receiving
  it is enough. Schedulers send TERM to every process of the job at once (Slurm on preemption
  and `scancel`, then KILL after the grace time; Kubernetes; `kill -TERM -PGID`): the data
  workers leave it to the training process (`gandist.data.loader.leave_stop_signals_to`), and
  further signals never kill a rank before its checkpoint is written.
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
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


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

    `install()` replaces the SIGTERM/SIGUSR1/SIGINT handlers of this process (main thread only)
    until `close()`. A first signal sets a flag; later ones are only logged: a scheduler or a
    launcher agent often sends TERM twice (to the group, then to each rank), and dying of the
    second would lose the checkpoint the first asked for. SIGKILL still stops a run at once.
    `close()` restores the previous handlers; an entry point about to exit then calls
    `ignore_stop_signals`, so a late signal cannot turn its clean exit into a death by signal.
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
            # A forked process that inherited the handler: it dies as before. (DataLoader
            # workers block stop signals first thing, in `leave_stop_signals_to`.)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        name = signal.Signals(signum).name
        if self.received:
            log.warning(
                "%s received: already stopping (asked by %s); the checkpoint is on its way "
                "(SIGKILL stops without one)",
                name,
                self.received,
            )
            return
        self.received = name
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


def ignore_stop_signals() -> None:
    """For a process whose work is done and saved, about to exit: stop signals are ignored from
    here on (a scheduler's late TERM must not turn exit code 0 into a death by signal)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _die_with_parent() -> None:
    """In the launcher's child, before exec: get TERM when this process dies (Linux), so a
    launcher in its own session is not orphaned by a SIGKILL of `gandist train`."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the orphan finishes its run on its own
        pass


def run_forwarding_stop(command: list[str], env: Mapping[str, str] | None = None) -> int:
    """Run a launcher (`accelerate launch ...`) whose ranks stop gracefully on our TERM/USR1/INT.

    The launcher runs in its own session, so a signal to our whole process group (a scheduler,
    `kill -TERM -PGID`, Ctrl-C) reaches only this process, never the launcher's agent (which
    would give its workers 30 s, or die on USR1). The first signal writes the ranks' stop file;
    later ones are only logged, so the ranks always finish their checkpoint (SIGKILL of this
    process still ends the launcher, with TERM). Returns the launcher's exit code.
    """
    env = dict(os.environ if env is None else env)
    with tempfile.TemporaryDirectory(prefix="gandist-stop-") as tmp:
        stop_file = Path(env.setdefault(STOP_FILE_ENV, str(Path(tmp) / "stop")))
        child = subprocess.Popen(
            command, env=env, start_new_session=True, preexec_fn=_die_with_parent
        )
        asked: list[str] = []

        def forward(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if asked:
                log.warning(
                    "%s received: the ranks are already stopping (asked by %s)", name, asked[0]
                )
                return
            asked.append(name)
            with stop_file.open("a") as f:
                f.write(f"requested by {name}\n")

        previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
        try:
            return child.wait()
        finally:
            if child.poll() is None:  # we are failing ourselves: do not leave the ranks behind
                child.terminate()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
