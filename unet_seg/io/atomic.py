"""Writing files so that no reader ever sees half of one: the content goes to a temporary file in
the destination's folder, which is renamed over the destination only when complete.

Before the rename the temporary file and then, after it, the folder are flushed to disk (fsync),
so a power cut leaves either the old file or the whole new one. While it is written, the
temporary file is locked (``flock``), so that :mod:`unet_seg.io.sweep` can tell the temporaries
of a live process from those a killed one left behind. Write errors (full disk, I/O errors)
become :class:`~unet_seg.errors.OutputWriteError` naming the destination.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from unet_seg.errors import OutputWriteError

# Every temporary name this project makes carries MARK, so the sweep of stale temporaries
# (:mod:`unet_seg.io.sweep`) can never take another program's hidden file for one of ours.
MARK = "unet-seg"
TEMP_PREFIX = f".{MARK}-tmp-"  # hidden: ``.unet-seg-tmp-<8 random>-<name>``
OLD_PREFIX = f".{MARK}-old-"  # a replaced output directory on its way out


def write_error(path: str | os.PathLike, err: OSError) -> OutputWriteError:
    """``err`` as an error that names the output ``path`` (kept as is if it already does)."""
    if isinstance(err, OutputWriteError):
        return err
    reason = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        reason = "no space left on the device"
    return OutputWriteError(err.errno, f"{path}: cannot write the output: {reason}")


def lock(fd: int) -> None:
    """Hold an exclusive lock on the open file ``fd`` until it is closed (see the module doc)."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def allocate(fd: int, size: int, path: str | os.PathLike) -> None:
    """Reserve ``size`` bytes on disk for ``fd`` now, so that writing through a memory map later
    cannot hit a full disk (which would kill the process with SIGBUS instead of an error)."""
    if size <= 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise write_error(path, err) from err
        os.ftruncate(fd, max(size, os.fstat(fd).st_size))  # a filesystem without fallocate


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's) data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_rename(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """fsync ``tmp``, rename it to ``path``, fsync the folder: durable and atomic."""
    fsync_path(tmp)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a folder; rename is done
        fsync_path(Path(path).parent)


def replace_atomic(write: Callable[[Path], object], path: str | os.PathLike) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    The temporary name ends with ``path``'s name, so writers that pick the format from the suffix
    (``.tif``, ``.nii.gz``, ...) write the right one. On any error the temporary file is removed
    and the destination is left as it was. Parent folders are created.

    Raises:
        OutputWriteError: the folder or the disk refused the data (names ``path``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=f"-{path.name}", dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from err
    tmp = Path(name)
    try:
        lock(fd)
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        commit_rename(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error(path, err) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return replace_atomic(lambda tmp: tmp.write_text(text), path)


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` atomically; ``FileNotFoundError`` if ``src`` is missing."""
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file to copy")
    return replace_atomic(lambda tmp: shutil.copyfile(src, tmp), dst)


def write_json_atomic(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON (NaN and Inf written as ``null``) to ``path`` atomically."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return write_text_atomic(path, json.dumps(clean(dict(data)), indent=2, sort_keys=True) + "\n")


def commit_dir(tmp: Path, path: Path) -> None:
    """Rename the finished directory ``tmp`` to ``path``; an existing ``path`` is moved aside
    first (``.unet-seg-old-<hex>-<name>``) and removed after (directories cannot be renamed over
    in one step). A run killed between the two leaves the aside copy, which the next run's sweep
    removes; one that cannot be removed now is named in an error, never left silently."""
    old = None
    if path.exists():
        old = path.with_name(f"{OLD_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        remove_tree(old)


def remove_tree(path: Path) -> None:
    """Remove the directory ``path`` whole; ``OSError`` naming it if any of it stays."""
    failures: list[str] = []
    # onerror, not onexc: the latter needs Python 3.12 (it gets the exception, not exc_info).
    shutil.rmtree(path, onerror=lambda _f, name, info: failures.append(f"{name}: {info[1]}"))
    if failures and path.exists():
        raise OSError(f"{path}: could not be removed ({failures[0]})")
