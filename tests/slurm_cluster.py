"""A private one-node Slurm cluster (munge, slurmctld, slurmd) for the Slurm tests.

Installs Debian's packages when they are missing and the tests run as root, starts the daemons
with their own config, sockets, state and logs in a temporary folder, and stops them by their pid
files. Nothing outside that folder is changed apart from the package install.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
GRACE_TIME_S = 60
"""Preemption grace of the default partition `debug` (a job of partition `urgent` preempts)."""
KILL_WAIT_S = 10
DAEMONS = ["munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "scancel"]


class SlurmUnavailable(RuntimeError):
    """Slurm is not installed and cannot be installed here."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def ensure_installed() -> None:
    """Install Slurm and munge from Debian's packages when one of them is missing."""
    if all(_which(name) for name in DAEMONS):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlurmUnavailable(
            f"Slurm is not installed ({', '.join(PACKAGES)}) and this is not a root Debian shell"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode:
            raise SlurmUnavailable(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    missing = [name for name in DAEMONS if not _which(name)]
    if missing:
        raise SlurmUnavailable(f"installed {PACKAGES} but {missing} are still missing")


@dataclass
class Cluster:
    """A running one-node cluster; `env` holds SLURM_CONF for sbatch and friends."""

    root: Path
    node: str
    env: dict[str, str] = field(default_factory=dict)
    pid_files: list[Path] = field(default_factory=list)

    def command(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        result = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode:
            raise RuntimeError(
                f"{' '.join(args)} exited {result.returncode}: {result.stderr}{result.stdout}"
            )
        return result.stdout

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """`scontrol show job` as one {field: value} per job (several for an array)."""
        text = self.command("scontrol", "-o", "show", "job", job_id)
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in text.splitlines()]

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-40:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, then stop the daemons together (each takes ~2 s to shut down)."""
        self.command("scancel", "--full", "--user", "root", check=False)
        _stop_pids([_read_pid(p) for p in self.pid_files])


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_pids(pids: list[int | None], timeout_s: float = 10.0) -> None:
    running = [pid for pid in pids if pid is not None and _alive(pid)]
    for pid in running:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while running and time.monotonic() < deadline:
        time.sleep(0.1)
        running = [pid for pid in running if _alive(pid)]
    for pid in running:
        os.kill(pid, signal.SIGKILL)


def _wait_for_file(path: Path, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {path} never appeared")
        time.sleep(0.1)


def start_cluster(root: Path, cpus: int = 2) -> Cluster:
    """Start munged, slurmctld and slurmd privately under `root`; the node has `cpus` CPUs."""
    ensure_installed()
    if os.geteuid() != 0:
        raise SlurmUnavailable("the test cluster runs its daemons as root (SlurmUser=root)")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)  # munged refuses key and socket folders that others may write to
    cluster = Cluster(root=root, node=socket.gethostname().split(".")[0])
    try:
        _start_daemons(cluster, cpus)
    except BaseException:
        logs = cluster.logs()
        cluster.stop()
        if logs:
            raise RuntimeError(f"the test Slurm cluster did not start\n{logs}") from None
        raise
    return cluster


def _start_daemons(cluster: Cluster, cpus: int) -> None:
    root, node = cluster.root, cluster.node
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = root / "munge.socket"
    munge_pid = root / "munged.pid"
    subprocess.run(
        [
            _which("munged") or "munged", "--force", f"--socket={munge_socket}",
            f"--key-file={key}", f"--pid-file={munge_pid}", f"--log-file={root / 'munged.log'}",
            f"--seed-file={root / 'munged.seed'}",
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    cluster.pid_files.append(munge_pid)

    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=gandisttest",
                f"SlurmctldHost={node}",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={munge_socket}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "ReturnToService=2",
                "MpiDefault=none",
                f"KillWait={KILL_WAIT_S}",
                "MinJobAge=600",
                "InactiveLimit=0",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'slurmd.log'}",
                f"NodeName={node} CPUs={cpus} RealMemory=2000 State=UNKNOWN",
                # Preemption as on shared clusters: a job of a higher PriorityTier partition
                # takes the CPUs of a `debug` job, which gets SIGTERM at once, SIGTERM and then
                # SIGKILL (KillWait later) once its GraceTime is over, and is requeued.
                "PreemptType=preempt/partition_prio",
                "PreemptMode=REQUEUE",
                f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP "
                f"PriorityTier=1 GraceTime={GRACE_TIME_S}",
                f"PartitionName=urgent Nodes={node} MaxTime=INFINITE State=UP PriorityTier=2",
                "",
            ]
        )
    )
    cluster.env = dict(os.environ, SLURM_CONF=str(conf))
    for daemon in ("slurmctld", "slurmd"):
        subprocess.run(
            [_which(daemon) or daemon, "-f", str(conf)],
            env=cluster.env, check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        pid_file = root / f"{daemon}.pid"
        cluster.pid_files.append(pid_file)
        _wait_for_file(pid_file, daemon)

    deadline = time.monotonic() + 30
    while True:
        # One line per partition the node is in.
        state = cluster.command("sinfo", "-h", "-N", "-o", "%T", check=False).split()
        if state and set(state) <= {"idle", "mixed", "allocated"}:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Slurm node never became idle (state {state!r})")
        time.sleep(0.3)
