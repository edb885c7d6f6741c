"""What patch sampling and class balancing need to know of a label too big to hold: its class
counts and a coarse grid of foreground counts, gathered by streaming the label once.

The grid counts the foreground voxels of each ``CELL``-sized cell; a foreground patch centre is a
cell drawn in proportion to its count, then a foreground voxel of that cell drawn uniformly (the
cell's label is read again for it), so every foreground voxel is equally likely, as with the
coordinates the in-memory path keeps. The grid takes ``1 / CELL^d`` of the label's voxels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from unet_seg.data.boxes import Box

CELL = 32  # voxels per axis of a foreground-count cell: small reads for a centre, small grid
BLOCK_VOXELS = 2**20  # voxels of label read at a time while scanning


def foreground_mask(target: np.ndarray, classes: Sequence[int] | None) -> np.ndarray:
    """Voxels of ``classes`` (default: every class > 0), like ``target``."""
    return target > 0 if classes is None else np.isin(target, list(classes))


def scan_blocks(shape: Sequence[int]) -> list[Box]:
    """Boxes tiling ``shape`` aligned to the cell grid, about ``BLOCK_VOXELS`` each: whole cells
    along the first axes, as many cells in-plane as fit."""
    cells = [min(CELL, n) for n in shape]
    lead = math.prod(cells[:-2])
    plane = max(CELL, int(math.sqrt(BLOCK_VOXELS / lead)) // CELL * CELL)
    block = [*cells[:-2], plane, plane]
    starts = [range(0, n, b) for n, b in zip(shape, block, strict=True)]
    return [
        tuple(slice(s, min(s + b, n)) for s, b, n in zip(point, block, shape, strict=True))
        for point in itertools.product(*starts)
    ]


@dataclass
class LabelIndex:
    """Class counts ``(K,)`` of a region's training target (ignored voxels left out) and its
    foreground counts per cell, ``(*ceil(shape / CELL))``."""

    counts: np.ndarray
    cells: np.ndarray
    classes: tuple[int, ...] | None

    @classmethod
    def scan(
        cls,
        read_target: Callable[[Box], np.ndarray],
        shape: Sequence[int],
        classes: Sequence[int] | None,
    ) -> LabelIndex:
        """Stream the target ``read_target(box)`` (int ``(*box size)``) of a region of ``shape``
        block by block; memory is one block."""
        counts = np.zeros(0, np.int64)
        cells = np.zeros([-(-n // CELL) for n in shape], np.int64)
        for box in scan_blocks(shape):
            target = read_target(box)
            found = np.bincount(target[target >= 0].ravel())
            counts = np.pad(counts, (0, max(len(found) - len(counts), 0)))
            counts[: len(found)] += found
            per_cell = foreground_mask(target, classes).astype(np.int64)
            for axis in range(per_cell.ndim):
                per_cell = np.add.reduceat(per_cell, np.arange(0, per_cell.shape[axis], CELL), axis)
            cells[tuple(slice(b.start // CELL, b.start // CELL + n) for b, n in
                        zip(box, per_cell.shape, strict=True))] += per_cell  # fmt: skip
        return cls(counts, cells, None if classes is None else tuple(classes))

    def balanced_weights(self) -> list[float]:
        """``w_c = n / (K n_c)`` over the K classes present (0 for absent ones): the weight
        map's ``"balanced"`` class weights of the whole region."""
        present = self.counts > 0
        table = np.zeros(len(self.counts), np.float64)
        table[present] = self.counts.sum() / (present.sum() * self.counts[present])
        return table.tolist()


class CellSampler:
    """Foreground patch centres of a region from its :class:`LabelIndex`, each voxel of the
    foreground equally likely; ``read_target(box)`` reads the cell drawn."""

    def __init__(
        self, index: LabelIndex, shape: Sequence[int], read_target: Callable[[Box], np.ndarray]
    ) -> None:
        self.index = index
        self.shape = tuple(shape)
        self.read_target = read_target
        self.cumulative = np.cumsum(index.cells.ravel())

    def __len__(self) -> int:
        return int(self.cumulative[-1]) if len(self.cumulative) else 0

    def draw(self, rng: np.random.Generator) -> tuple[int, ...]:
        k = int(np.searchsorted(self.cumulative, rng.integers(len(self)), side="right"))
        cell = np.unravel_index(k, self.index.cells.shape)
        box = tuple(slice(c * CELL, min((c + 1) * CELL, n)) for c, n in
                    zip(cell, self.shape, strict=True))  # fmt: skip
        voxels = np.argwhere(foreground_mask(self.read_target(box), self.index.classes))
        pick = voxels[rng.integers(len(voxels))]
        return tuple(int(b.start + p) for b, p in zip(box, pick, strict=True))
