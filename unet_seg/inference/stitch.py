"""Instances of any size: labelled per block, merged across block faces, relabelled.

1. Each block labels the objects of its own write region (:func:`local_instances`), stores the
   local ids ``1..n`` and records, per id, its size and its first voxel in raster order.
2. :func:`merge_table`: block ``b``'s ids become global by an offset (the ids of the blocks
   before it); the two voxel planes on either side of every face between neighbouring blocks
   give the pairs of ids that touch; the connected components of that graph
   (``scipy.sparse.csgraph``) are the objects. Memory: one face and the table.
3. Objects are numbered ``1..N`` in the raster order of their first voxel, which is how
   ``scipy.ndimage.label`` numbers them, so connected-components mode equals
   ``scipy.ndimage.label`` on the whole label map exactly; objects smaller than ``min_size``
   voxels (counted over all their blocks) become 0. :func:`relabel_block` applies the table.

With ``split`` (watershed of touching objects) each block splits its own objects; the split is
then the block's, and objects cut by a face are joined across it where they touch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from unet_seg.inference.postprocess import instance_labels


@dataclass(frozen=True)
class StitchOptions:
    foreground_class: int = 1
    split: bool = False
    min_distance: int = 5
    min_size: int = 0
    spacing: tuple[float, ...] | None = None  # (Z, Y, X) distances for the watershed


def local_instances(labels: np.ndarray, options: StitchOptions) -> tuple[np.ndarray, dict]:
    """Objects of one block's ``(Z, Y, X)`` class map: uint32 ids ``1..n`` and a summary
    ``{count, sizes, first}`` (``first``: each id's first voxel, block raster order)."""
    mask = labels == options.foreground_class
    ids = instance_labels(mask, options.split, options.min_distance, 0, options.spacing).astype(
        np.uint32
    )
    flat = ids.ravel()
    values, first = np.unique(flat, return_index=True)
    sizes = np.bincount(flat)[values]
    keep = values > 0
    return ids, {
        "count": int(values[keep].max()) if keep.any() else 0,
        "sizes": sizes[keep].tolist(),
        "first": first[keep].tolist(),
    }


def _global_raster(first: Sequence[int], block_shape: Sequence[int], origin: Sequence[int],
                   volume_shape: Sequence[int]) -> np.ndarray:  # fmt: skip
    """Raster indices in the volume of raster indices inside a block at ``origin``."""
    local = np.unravel_index(np.asarray(first, dtype=np.int64), tuple(block_shape))
    coords = [c + o for c, o in zip(local, origin, strict=True)]
    return np.ravel_multi_index(coords, tuple(volume_shape)).astype(np.int64)


@dataclass
class MergeTable:
    """Local id ``i`` of block ``b`` is global ``lut[offsets[b] + i]`` (``lut[offset] = 0``
    for the background of every block)."""

    offsets: np.ndarray
    lut: np.ndarray
    count: int

    def relabel(self, index: int, ids: np.ndarray) -> np.ndarray:
        table = self.lut[self.offsets[index] : self.offsets[index + 1] + 1].copy()
        table[0] = 0
        return table[ids]


def face_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unique ``(id_a, id_b)`` pairs of foreground voxels facing each other: ``(n, 2)``."""
    touch = (a > 0) & (b > 0)
    pairs = np.stack([a[touch], b[touch]], axis=1).astype(np.int64)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def merge_table(
    blocks: Any,
    summaries: dict[int, dict],
    faces: Iterable[tuple[int, int, np.ndarray, np.ndarray]],
    min_size: int = 0,
) -> MergeTable:
    """Join the objects of all blocks.

    Args:
        blocks: the :class:`~unet_seg.inference.blocks.BlockPlan`.
        summaries: block index -> :func:`local_instances` summary.
        faces: ``(block_a, block_b, plane_a, plane_b)``: the local ids on both sides of a face.
        min_size: objects with fewer voxels in total become background.
    """
    counts = np.array([summaries[i]["count"] for i in range(len(blocks))], dtype=np.int64)
    # Block b owns global slots offsets[b] + 1 .. offsets[b] + count_b; slot 0 is background.
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1]) + 1
    rows, cols = [], []
    for a, b, plane_a, plane_b in faces:
        pairs = face_pairs(plane_a, plane_b)
        rows.append(pairs[:, 0] + offsets[a])
        cols.append(pairs[:, 1] + offsets[b])
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    graph = sparse.coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(total, total))
    _, component = connected_components(graph, directed=False)
    sizes = np.zeros(total, np.int64)
    first = np.full(total, np.iinfo(np.int64).max, np.int64)
    volume_shape = blocks.volume_shape
    for index in range(len(blocks)):
        info = summaries[index]
        if not info["count"]:
            continue
        block = blocks.block(index)
        slots = offsets[index] + 1 + np.arange(info["count"])
        origin = [a for a, _ in block.write]
        sizes[slots] = info["sizes"]
        first[slots] = _global_raster(info["first"], block.shape, origin, volume_shape)
    object_size = np.bincount(component, weights=sizes).astype(np.int64)
    object_first = np.full(component.max() + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(object_first, component, first)
    object_first[component[0]] = np.iinfo(np.int64).max  # slot 0 is no object
    real = (object_first < np.iinfo(np.int64).max) & (object_size >= max(min_size, 1))
    order = np.argsort(object_first[real], kind="stable")
    new_id = np.zeros(len(object_first), np.int64)
    new_id[np.flatnonzero(real)[order]] = np.arange(1, real.sum() + 1)
    lut = new_id[component]
    lut[0] = 0
    return MergeTable(offsets, lut, int(real.sum()))


def neighbour_faces(blocks: Any) -> Iterable[tuple[int, int, int]]:
    """``(block_a, block_b, axis)`` for every pair of blocks sharing a face along ``axis``."""
    grid = blocks.grid
    for index in range(len(blocks)):
        position = np.unravel_index(index, grid)
        for axis in range(3):
            if position[axis] + 1 < grid[axis]:
                other = list(position)
                other[axis] += 1
                yield index, int(np.ravel_multi_index(other, grid)), axis


def face_boxes(blocks: Any, a: int, b: int, axis: int) -> tuple[tuple, tuple]:
    """The last plane of block ``a`` and the first of block ``b`` along ``axis``: boxes."""
    write = blocks.block(a).write
    stop = write[axis][1]
    box_a = [slice(lo, hi) for lo, hi in write]
    box_b = list(box_a)
    box_a[axis], box_b[axis] = slice(stop - 1, stop), slice(stop, stop + 1)
    return tuple(box_a), tuple(box_b)
