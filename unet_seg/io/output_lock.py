"""One run at a time per output: a lock file beside each output while a run writes it.

Two runs writing the same output (two ``unet-seg-predict`` into one folder, one with other
settings) would write the same temporary store and publish a mix of both. A run takes
``.<output name>.lock`` (created exclusively; it holds the run's host and pid) before it writes an
output and removes it when done. Another run finding the lock:

- on the same host, with the pid still running: refuses that output, naming the pid;
- on the same host, with the pid gone (``kill -9``, a power cut): removes the stale lock, says so,
  and takes it;
- from another host (a shared file system; whether that run lives cannot be told from here):
  refuses, naming host and pid, unless told to take over (``steal_locks=true``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)
_TRIES = 3  # a lock removed as stale may be taken by another run first: look again
_BEING_WRITTEN_S = 10.0  # a lock younger than this without its owner yet is being created


class OutputLockedError(ValueError):
    """Another run holds an output's lock (the message names the output and that run)."""


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of the output ``target``: ``.<name>.lock`` beside it."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def _owner(path: Path) -> dict:
    """The host and pid a lock file records (``{}`` when unreadable or half-written)."""
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _age(path: Path) -> float:
    """Seconds since ``path`` was last modified (0 where it is gone: taken as young)."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _running(pid: object) -> bool:
    """Whether ``pid`` is a process of this host (another than us)."""
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _acquire(target: Path, steal: bool) -> Path:
    """Take the lock of ``target``; its path. ``OutputLockedError`` when a live run holds it."""
    path = lock_path(target)
    host = socket.gethostname()
    for _ in range(_TRIES):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if not owner and _age(path) < _BEING_WRITTEN_S:
                raise OutputLockedError(
                    f"{target}: another run is taking its lock {path}"
                ) from None
            other_host, pid = owner.get("host"), owner.get("pid")
            if other_host not in (None, host) and not steal:
                raise OutputLockedError(
                    f"{target}: being written by a run on host {other_host} (pid {pid}), "
                    f"lock {path}; if that run is gone, pass steal_locks=true to take over"
                ) from None
            if other_host == host and _running(pid):
                raise OutputLockedError(
                    f"{target}: being written by another run (pid {pid} on this host); wait for "
                    "it, or predict into another output_dir"
                ) from None
            log.warning("%s: taking over the lock of a run that is gone (host %s, pid %s)",
                        target, other_host, pid)  # fmt: skip
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as file:
            json.dump({"host": host, "pid": os.getpid()}, file)
        return path
    raise OutputLockedError(f"{target}: its lock {path} keeps being taken by other runs")


@contextlib.contextmanager
def output_locks(targets: Iterable[str | os.PathLike], steal: bool = False) -> Iterator[None]:
    """Hold the locks of every output in ``targets`` while the block runs (taken in name order,
    all or none); ``steal``: take over locks of runs on other hosts."""
    held: list[Path] = []
    try:
        for target in sorted({Path(t) for t in targets}):
            target.parent.mkdir(parents=True, exist_ok=True)
            held.append(_acquire(target, steal))
        yield
    finally:
        for path in reversed(held):
            path.unlink(missing_ok=True)
