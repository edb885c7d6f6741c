"""Removing the temporaries that a killed run (``kill -9``, a power cut) left in an output folder.

Only our own hidden names are touched (:data:`TEMPORARY_NAMES`), only files older than the start
of the current run, and only when no live process holds their lock: the writers of
:mod:`unet_seg.io.atomic` and :mod:`unet_seg.io.slabs` lock a temporary file for as long as they
write it, and the kernel drops that lock when the process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

TEMPORARY_NAMES = re.compile(
    r"^\.tmp-[A-Za-z0-9_]{8}-.+$"  # io.atomic.replace_atomic (tempfile.mkstemp)
    r"|^\..+\.partial-[0-9a-f]{8}(\.raw)?$"  # io.slabs.SlabWriter
    r"|^\..+\.(labels|seeds)-[0-9a-f]{8}\.(tif|tiff|png|nii|nii\.gz)$",  # predict's scratch maps
    re.IGNORECASE,
)
# Inside zarr stores: a chunk zarr was writing (``<chunk>.<uuid hex>.partial``, renamed when
# complete; the partial store itself stays: it is resumable). Beside them: an old output moved
# aside by io.atomic.commit_dir, to be deleted right after the new one took its name.
ZARR_TEMPORARY_FILES = re.compile(r"^.+\.[0-9a-f]{32}\.partial$")
ZARR_TEMPORARY_DIRS = re.compile(r"^\.old-[0-9a-f]{8}-.+$")


def _unlocked(path: Path) -> bool:
    """No process holds the file's lock (we take it and let it go at once)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _older(path: Path, started: float) -> bool:
    try:
        return path.stat().st_mtime < started
    except OSError:
        return False


def sweep_stale_temporaries(folder: str | os.PathLike, started: float) -> list[Path]:
    """Delete our temporaries under ``folder`` (and its subfolders) last modified before
    ``started`` (a ``time.time()``) and not locked; returns what was removed."""
    removed: list[Path] = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for dirpath, folders, names in os.walk(root):
        for name in [f for f in folders if ZARR_TEMPORARY_DIRS.match(f)]:
            path = Path(dirpath) / name
            folders.remove(name)
            if _older(path, started):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        for name in names:
            if not (TEMPORARY_NAMES.match(name) or ZARR_TEMPORARY_FILES.match(name)):
                continue
            path = Path(dirpath) / name
            if _older(path, started) and _unlocked(path):
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", len(removed))
    return removed
