"""A real single-node SLURM for the ``slurm`` tests: ``munged``, ``slurmctld`` and ``slurmd`` on
this machine, started once per session and stopped after it.

Needs root (the daemons run as root and jobs run as root); installs Debian's ``slurm-wlm`` and
``munge`` with ``apt-get`` when they are missing. Everything the daemons write (key, sockets,
state, spool, logs) lives in one temporary folder that is removed afterwards; ports are free ones
picked at start, so two sessions on one machine do not meet. Client commands find the cluster
through ``SLURM_CONF``, set in ``os.environ`` for the session (dask-jobqueue's ``sbatch`` and
the jobs themselves inherit it). Any step that fails skips the tests with the reason and the
end of the daemon's log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")


@dataclass(frozen=True)
class Slurm:
    """The running cluster: ``conf`` is its ``slurm.conf``, ``root`` the folder of its state;
    ``node`` the node's name (this host) and ``partition`` the only partition."""

    root: Path
    conf: Path
    node: str
    partition: str = "debug"

    def run(self, *args: str, timeout: float = 60, input_text: str | None = None) -> str:
        """A SLURM client command's stdout; raises with its stderr when it fails."""
        result = _run(list(args), input_text, timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def sbatch(self, script: str, *options: str) -> str:
        """Submit ``script`` (the text of a batch script); returns the job id."""
        return self.run("sbatch", "--parsable", *options, input_text=script).split(";")[0].strip()

    def job_state(self, job: str) -> str:
        """``PENDING``, ``RUNNING``, ``COMPLETED``, ``FAILED``, ... as ``scontrol`` says."""
        return self.job_fields(job)["JobState"]

    def job_fields(self, job: str) -> dict[str, str]:
        """``scontrol show job``'s ``Key=Value`` fields (``JobState``, ``Restarts``, ...)."""
        fields = self.run("scontrol", "show", "job", "-o", job).split()
        return dict(f.split("=", 1) for f in fields if "=" in f)

    def wait(self, job: str, timeout: float) -> str:
        """Wait until ``job`` ends; its final state."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            state = self.job_state(job)
            if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED",
                             "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED"):  # fmt: skip
                return state
            time.sleep(1)
        raise TimeoutError(f"job {job} still {self.job_state(job)} after {timeout} s")

    def logs(self) -> str:
        """The end of each daemon's log, for a failing test's message."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / name
            if path.is_file():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(parts)


def _run(args: list[str], input_text: str | None = None, timeout: float = 60):
    return subprocess.run(args, input=input_text, capture_output=True, text=True, timeout=timeout)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _memory_mb() -> int:
    """A little under the machine's memory: slurmd drains a node configured with more."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * 0.9)
    raise RuntimeError("no MemTotal in /proc/meminfo")


def _install() -> str | None:
    """Install the packages where a daemon is missing; the reason it failed, else None."""
    if all(shutil.which(d) for d in DAEMONS):
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    for args in (["apt-get", "update", "-q"], install):
        result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0:
            return f"{' '.join(args)} failed: {result.stderr.strip()[-500:]}"
    missing = [d for d in DAEMONS if not shutil.which(d)]
    return f"{', '.join(missing)} not found after installing {PACKAGES}" if missing else None


def write_conf(root: Path, node: str, memory_mb: int, ports: list[int]) -> Path:
    """A minimal single-node ``slurm.conf``: no cgroups, no accounting, state in ``root``.
    ``JobRequeue=1`` lets a batch job be requeued (Lightning's auto-requeue on SIGUSR1)."""
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=unetseg
SlurmctldHost={node}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root / "munge.sock"}
CredType=cred/munge
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "slurmctld.log"}
SlurmdLogFile={root / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
NodeName={node} CPUs=2 RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _start(root: Path, node: str) -> Path:
    """Start the three daemons; the ``slurm.conf``. Raises RuntimeError with the reason."""
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = write_conf(root, node, _memory_mb(), _free_ports(2))
    munged = ["munged", "--force", f"--key-file={key}", f"--socket={root / 'munge.sock'}",
              f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'munged.log'}",
              f"--seed-file={root / 'munged.seed'}"]  # fmt: skip
    # Each daemonises itself and writes its pid file; -f names our slurm.conf.
    for args in (munged, ["slurmctld", "-f", str(conf)], ["slurmd", "-f", str(conf)]):
        result = _run(args)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} did not start: {result.stderr.strip()[-500:]}")
    env = dict(os.environ, SLURM_CONF=str(conf))
    end = time.monotonic() + 60
    while time.monotonic() < end:
        shown = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True,
                               text=True, env=env)  # fmt: skip
        if shown.stdout.strip() == "idle":
            return conf
        time.sleep(0.5)
    raise RuntimeError(f"node not idle after 60 s (sinfo: {shown.stdout.strip()!r})")


def _stop(root: Path) -> None:
    """Cancel every job, stop the daemons (slurmd, slurmctld, munged) and wait for them."""
    subprocess.run(["scancel", "--full", "--user=root"], capture_output=True, timeout=30)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        queue = subprocess.run(["squeue", "-h"], capture_output=True, text=True, timeout=30)
        if queue.returncode != 0 or not queue.stdout.strip():
            break
        time.sleep(1)
    for name in ("slurmd", "slurmctld", "munged"):
        pid_file = root / f"{name}.pid"
        if not pid_file.is_file():
            continue
        pid = int(pid_file.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        end = time.monotonic() + 20
        while time.monotonic() < end and Path(f"/proc/{pid}").exists():
            time.sleep(0.2)


@pytest.fixture(scope="session")
def slurm() -> Iterator[Slurm]:
    """The session's single-node SLURM (see the module docstring); skips where it cannot run."""
    if os.geteuid() != 0:
        pytest.skip("a real SLURM needs root (its daemons and jobs run as root here)")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("the SLURM node is configured with 2 CPUs; this machine has fewer")
    reason = _install()
    if reason:
        pytest.skip(f"slurm-wlm/munge not installable: {reason}")
    root = Path(tempfile.mkdtemp(prefix="slurm-"))
    root.chmod(0o755)  # munged's socket must be reachable
    node = socket.gethostname().split(".")[0]
    previous = os.environ.get("SLURM_CONF")
    try:
        try:
            conf = _start(root, node)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
            logs = Slurm(root, root / "slurm.conf", node).logs()
            pytest.skip(f"single-node SLURM did not start: {err}\n{logs}")
        os.environ["SLURM_CONF"] = str(conf)
        yield Slurm(root, conf, node)
    finally:
        if (root / "slurm.conf").is_file():
            os.environ["SLURM_CONF"] = str(root / "slurm.conf")
            _stop(root)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        shutil.rmtree(root, ignore_errors=True)
