"""Connected components of a mask read slab by slab, numbered as ``scipy.ndimage.label`` numbers
them on the whole mask.

A mask too big to hold whole arrives as slabs of planes along axis 0, in order. Each slab is
labelled on its own (``ndi.label``, its default face connectivity); the ids ``1..n`` of slab
``b`` are the *slots* ``offsets[b] + 1 .. offsets[b] + n``. Two slots are one object when their
voxels face each other across the face between two slabs (the last plane of one, the first of
the next, at the same position: face connectivity). Those pairs are joined by a union-find
(``scipy.sparse.csgraph.connected_components``). ``ndi.label`` numbers objects in the raster order
of their first voxel; within a slab the ids already follow that order, and every voxel of a slab
comes before every voxel of the next, so slot order is first-voxel order: an object's id is the
rank of its lowest slot, and :meth:`SlabComponents.lut` maps slots to exactly the ids of
``ndi.label`` on the whole mask.

Memory: one slab's labels, the previous slab's last plane, the touching pairs and a few numbers
per slot (:data:`SLOT_BYTES`); nothing grows with the image except the number of objects.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse.csgraph import connected_components

SLOT_BYTES = 64  # what the union-find keeps and allocates per slot (graph, labels, ranks, lut)


class SlabComponents:
    """Labels the slabs of one mask, in order along axis 0, and joins them at the end.

    Use: ``ids, offset = components.add(mask_slab)`` per slab (``ids``: int32 labels
    ``(planes, *rest)``, slab-local ``1..n``; slot ``offset + i`` is local id ``i``), then
    ``lut = components.lut()``: ``lut[slot]`` is the object's id in the whole mask (0 stays 0).
    """

    def __init__(self) -> None:
        self.slots = 0  # slots handed out so far
        self._last: np.ndarray | None = None  # last plane of the previous slab, as slots
        self._pairs: list[np.ndarray] = []  # (n, 2) slots that touch across a face

    def add(self, mask: np.ndarray) -> tuple[np.ndarray, int]:
        """Label the next slab ``(planes, *rest)`` of the mask (bool); returns its int32 ids and
        the offset that makes them slots."""
        ids, count = ndi.label(mask, output=np.int32)
        offset = self.slots
        if len(ids):
            first = _slots(ids[0], offset)
            if self._last is not None:
                touch = (self._last > 0) & (first > 0)
                if touch.any():
                    pairs = np.stack([self._last[touch], first[touch]], axis=1)
                    self._pairs.append(np.unique(pairs, axis=0))
            self._last = _slots(ids[-1], offset)
        self.slots += int(count)
        return ids, offset

    def pair_count(self) -> int:
        """Touching slot pairs recorded so far."""
        return sum(len(p) for p in self._pairs)

    def lut(self) -> np.ndarray:
        """``(slots + 1,)`` int64: each slot's id in the whole mask's ``ndi.label`` numbering."""
        total = self.slots + 1
        pairs = np.concatenate(self._pairs) if self._pairs else np.zeros((0, 2), np.int64)
        graph = sparse.coo_matrix(
            (np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(total, total)
        )
        count, component = connected_components(graph, directed=False)
        # Slot 0 (background) touches nothing: its own component. The others are numbered by
        # their lowest slot, which np.unique's first index gives.
        _, first = np.unique(component[1:], return_index=True)
        rank = np.zeros(count, np.int64)
        rank[component[1:][np.sort(first)]] = np.arange(1, len(first) + 1)
        lut = rank[component]
        lut[0] = 0
        return lut


def _slots(plane: np.ndarray, offset: int) -> np.ndarray:
    """Slab-local ids of one plane as slots (int64; background stays 0)."""
    plane = plane.astype(np.int64)
    plane[plane > 0] += offset
    return plane
