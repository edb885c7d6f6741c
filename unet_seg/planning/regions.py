"""Which regions of a case the fingerprint reads: the whole case when it is small, otherwise a
bounded number of chunk-sized boxes chosen by a seeded generator (never the whole store).

A terabyte OME-Zarr image cannot be read whole to learn its intensities and objects. Above
:data:`WHOLE_VOXELS` voxels a case is sampled: :data:`SAMPLE_BOXES` boxes, each one storage chunk
(or :data:`DEFAULT_BOX` where the format has no chunks), at chunk-aligned positions drawn by
``numpy.random.default_rng((seed, case_index))``. The same data and seed give the same boxes, so
the same fingerprint and the same plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WHOLE_VOXELS = 1 << 24  # 16 Mi voxels (64 MiB as float32): read whole below this
SAMPLE_BOXES = 16  # boxes read from each larger case: bounded work whatever the store's size
DEFAULT_BOX = {2: (512, 512), 3: (64, 128, 128)}  # where the format has no chunks (TIFF, NIfTI)
MIN_BOX_SIDE = 64  # chunks thinner than this are read several at a time, so objects fit in a box
MAX_BOX_VOXELS = 1 << 22  # 4 Mi voxels (32 MiB as float64): the most one box may hold


@dataclass(frozen=True)
class Sampling:
    """How a case was read: ``boxes`` spatial slices, ``whole`` when they cover it entirely."""

    boxes: tuple[tuple[slice, ...], ...]
    whole: bool
    voxels_total: int

    @property
    def voxels_read(self) -> int:
        return sum(math.prod(s.stop - s.start for s in box) for box in self.boxes)


def box_shape(shape: Sequence[int], chunks: Sequence[int] | None) -> tuple[int, ...]:
    """The spatial box of one sample: the storage chunk, grown to whole chunks of at least
    :data:`MIN_BOX_SIDE` per axis, never larger than the case; then halved (the grown axes
    first, then the longest) until it holds at most :data:`MAX_BOX_VOXELS`: a huge chunk is read
    in part."""
    ndim = len(shape)
    if chunks is None or len(chunks) != ndim:
        base = DEFAULT_BOX.get(ndim, (64,) * ndim)
        return tuple(min(int(b), int(s)) for b, s in zip(base, shape, strict=True))
    out = []
    for size, chunk in zip(shape, chunks, strict=True):
        chunk = max(int(chunk), 1)
        out.append(min(int(size), chunk * max(1, math.ceil(MIN_BOX_SIDE / chunk))))
    chunks = [max(int(c), 1) for c in chunks]
    while math.prod(out) > MAX_BOX_VOXELS:
        grown = [a for a in range(ndim) if out[a] > chunks[a]]  # undo growth before cutting chunks
        axis = max(grown or range(ndim), key=lambda a: out[a])
        out[axis] = max(chunks[axis] if grown else 1, out[axis] // 2)
    return tuple(out)


def plan_regions(
    shape: Sequence[int],
    chunks: Sequence[int] | None = None,
    seed: int = 0,
    case_index: int = 0,
    whole_voxels: int = WHOLE_VOXELS,
    boxes: int = SAMPLE_BOXES,
) -> Sampling:
    """The regions of a case of spatial ``shape`` to read (see the module docstring).

    Boxes are aligned to ``box_shape`` steps, so each one reads whole chunks of a zarr store; a
    grid of fewer than ``boxes`` whole boxes gives them all (a remainder at the far edge that is
    not a whole box is never drawn).
    """
    shape = tuple(int(s) for s in shape)
    total = math.prod(shape)
    if total <= whole_voxels:
        return Sampling((tuple(slice(0, s) for s in shape),), True, total)
    box = box_shape(shape, chunks)
    grid = [max(1, s // b) for s, b in zip(shape, box, strict=True)]  # whole boxes only
    rng = np.random.default_rng((int(seed), int(case_index)))
    cells = math.prod(grid)
    picks = rng.choice(cells, size=min(boxes, cells), replace=False)
    unique = tuple(
        tuple(slice(int(i) * b, int(i) * b + b) for i, b in zip(index, box, strict=True))
        for index in (np.unravel_index(flat, grid) for flat in sorted(int(p) for p in picks))
    )
    return Sampling(unique, False, total)
