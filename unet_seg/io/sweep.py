"""Removing the temporaries that a killed run (``kill -9``, a power cut) left beside its outputs.

Narrow on purpose, because an output folder may be a shared data folder:

- only the folders this run writes outputs into (not their subfolders) and this run's own
  partial zarr stores are looked at;
- only names this project makes, all of which carry :data:`~unet_seg.io.atomic.MARK`
  (:data:`TEMPORARY_NAMES`); inside a partial store, zarr's half-written chunks;
- only what was last modified before the current run started, and only files no live process
  holds the lock of: the writers of :mod:`unet_seg.io.atomic` and :mod:`unet_seg.io.slabs` lock
  a temporary file for as long as they write it, and the kernel drops that lock when the
  process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from unet_seg.io.atomic import MARK, OLD_PREFIX, TEMP_PREFIX

log = logging.getLogger(__name__)

_M = re.escape(MARK)
TEMPORARY_NAMES = re.compile(
    rf"^{re.escape(TEMP_PREFIX)}[A-Za-z0-9_]{{8}}-.+$"  # io.atomic.replace_atomic (mkstemp)
    rf"|^\..+\.{_M}-partial-[0-9a-f]{{8}}(\.raw)?$"  # io.slabs.SlabWriter
    rf"|^\..+\.{_M}-[a-z]+-[0-9a-f]{{8}}\.(tif|tiff|png|nii|nii\.gz)$",  # scratch
    re.IGNORECASE,
)
# An old output store moved aside by io.atomic.commit_dir, to be deleted right after the new
# one took its name.
OLD_STORES = re.compile(rf"^{re.escape(OLD_PREFIX)}[0-9a-f]{{8}}-.+$")
PARTIAL_STORES = re.compile(rf"^\..+\.{_M}-partial$")  # io.zarr.output.partial_store
# Inside our partial zarr stores: a chunk zarr was writing (``<chunk>.<uuid hex>.partial``,
# renamed when complete; the partial store itself stays: it is resumable).
ZARR_TEMPORARY_FILES = re.compile(r"^.+\.[0-9a-f]{32}\.partial$")


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
        return path.lstat().st_mtime < started
    except OSError:
        return False


def _sweep_folder(folder: Path, started: float) -> list[Path]:
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # not there (yet), or not ours to list
        return removed
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False) and OLD_STORES.match(entry.name):
            if _older(path, started):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        elif entry.is_dir(follow_symlinks=False) and PARTIAL_STORES.match(entry.name):
            removed += _sweep_store(path, started)
        elif entry.is_file(follow_symlinks=False) and TEMPORARY_NAMES.match(entry.name):
            if _older(path, started) and _unlocked(path):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _sweep_store(store: Path, started: float) -> list[Path]:
    removed = []
    for dirpath, _, names in os.walk(store):
        for name in names:
            path = Path(dirpath) / name
            if ZARR_TEMPORARY_FILES.match(name) and _older(path, started):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def sweep_stale_temporaries(outputs: Iterable[str | os.PathLike], started: float) -> list[Path]:
    """Delete the stale temporaries beside the output paths ``outputs`` (see the module
    docstring): ours in their folders and in our partial zarr stores there, last modified
    before ``started`` (a ``time.time()``) and not locked; returns what was removed."""
    removed: list[Path] = []
    for folder in dict.fromkeys(Path(p).parent for p in outputs):
        removed += _sweep_folder(folder, started)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", len(removed))
    return removed
