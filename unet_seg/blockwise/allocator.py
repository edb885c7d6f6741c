"""Let glibc's malloc reuse freed tensor memory in processes where Dask switched that off.

Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (its
``distributed.nanny.pre-spawn-environ``) so that unmanaged memory goes back to the system. Setting
that variable also switches off glibc's *dynamic* mmap threshold, which otherwise grows to the
size of the largest freed block: every allocation over 128 KiB then becomes its own ``mmap``,
and every activation of every forward pass is page-faulted and zeroed afresh, its ``munmap``
taking the process's memory-map lock each time. A worker ran the same blocks 0.8-0.9x as fast as
the same code in-process (``benchmarks/bench_scale.py``); with the thresholds below, at which
glibc's dynamic rule would settle by itself, 1.1-1.2x.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc's mallopt parameters (malloc.h) and the ceiling of its own dynamic mmap threshold
# (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit); the trim threshold is twice that, as glibc sets it.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
_done = False


def _glibc():
    """The C library if it is glibc (it has ``mallopt``), else ``None`` (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def reuse_freed_memory(force: bool = False) -> bool:
    """Raise malloc's mmap and trim thresholds where ``MALLOC_TRIM_THRESHOLD_`` pinned them.

    Acts once per process, and only where that variable is set (a Dask worker, or a user's own
    choice) unless ``force``; returns whether the thresholds were set now.
    """
    global _done
    if _done or not (force or "MALLOC_TRIM_THRESHOLD_" in os.environ):
        return False
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    ok = bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and ok
    _done = ok
    return ok
