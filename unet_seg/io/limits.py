"""Checks a reader makes before it allocates anything: does the file hold what its header
declares, and is the volume within the size the user allows (``max_voxels``)?

A corrupt or hostile header can claim a 100 000 x 100 000 x 10 000 image in a file of a few bytes;
without these checks a reader allocates what the header claims (or maps past the end of the file)
before noticing. Uncompressed data must fit in the file; compressed data cannot expand by more
than the format's ratio limit (:data:`DEFLATE_MAX_RATIO`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

# zlib/deflate cannot expand data by more than about 1032:1 (RFC 1951: a 258-byte match per
# 2 bits at best), so a deflated stream declaring more is corrupt or hostile.
DEFLATE_MAX_RATIO = 1032


def declared_bytes(shape: Sequence[int], dtype: np.dtype | str) -> int:
    """Bytes of an array of ``shape`` and ``dtype`` (Python ints: no overflow)."""
    return math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize


def check_voxels(path: str | os.PathLike, shape: Sequence[int], max_voxels: int | None) -> None:
    """``ValueError`` naming ``path`` if ``shape`` has more than ``max_voxels`` voxels."""
    voxels = math.prod(int(s) for s in shape)
    if max_voxels is not None and voxels > int(max_voxels):
        raise ValueError(
            f"{path}: {tuple(int(s) for s in shape)} is {voxels:,} voxels, more than "
            f"max_voxels={int(max_voxels):,}; raise max_voxels to process it"
        )


def check_stored(path: str | os.PathLike, needed: int, available: int, what: str) -> None:
    """``ValueError`` naming ``path`` if the header needs ``needed`` bytes of ``what`` and the
    file holds ``available``: the file is truncated or its header is corrupt."""
    if needed > available:
        raise ValueError(
            f"{path}: corrupt or truncated: its header declares {needed:,} bytes of {what}, "
            f"the file holds {available:,}"
        )


def check_deflated(path: str | os.PathLike, declared: int, compressed: int) -> None:
    """``ValueError`` if ``compressed`` deflated bytes cannot hold ``declared`` bytes."""
    if declared > max(compressed, 1) * DEFLATE_MAX_RATIO:
        raise ValueError(
            f"{path}: corrupt header: it declares {declared:,} bytes of image data, more than "
            f"{compressed:,} compressed bytes can hold"
        )


def memory_budget() -> int:
    """Bytes one read may allocate: half of the memory available now (``MemAvailable``)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (OSError, ValueError):
        return 1 << 34  # no way to ask: 16 GiB


def check_memory(path: str | os.PathLike, needed: int, what: str) -> None:
    """``ValueError`` naming ``path`` if reading ``what`` needs more than :func:`memory_budget`:
    formats whose missing data read as a fill value (zarr) cannot be bounded by the file size."""
    budget = memory_budget()
    if needed > budget:
        raise ValueError(
            f"{path}: {what} needs {needed:,} bytes of memory, more than the {budget:,} one read "
            "may take (half of the memory available); read it by regions (open_volume), as "
            "predict does"
        )
