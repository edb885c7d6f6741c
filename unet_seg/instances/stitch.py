"""Instances of any size: labelled per block, merged across block faces, relabelled.

1. Each block labels the connected components of its own write region (:func:`local_instances`),
   stores the local ids ``1..n`` and records, per id, its size and its first voxel in raster
   order.
2. :func:`merge_table`: block ``b``'s ids become global by an offset (the ids of the blocks
   before it); the two voxel planes on either side of every face between neighbouring blocks
   give the pairs of ids that touch; the connected components of that graph
   (``scipy.sparse.csgraph``) are the objects. Memory: one face and the table.
3. Objects are numbered ``1..N`` in the raster order of their first voxel, which is how
   ``scipy.ndimage.label`` numbers them, so connected-components mode equals
   ``scipy.ndimage.label`` on the whole label map exactly; objects smaller than ``min_size``
   voxels (counted over all their blocks) become 0. :meth:`MergeTable.relabel` applies the table.

``distance`` and ``seeded`` split touching objects by a watershed, which no face can stitch: the
components (and for ``seeded`` the seeds) are stitched like this first, then every block floods
its region from those global seeds with a halo around it (:mod:`unet_seg.blockwise.flood`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from unet_seg.instances.seeded import object_and_seed_masks

DEFAULT_HALO = 32  # voxels; objects and clusters of touching ones up to this across are exact


@dataclass(frozen=True)
class StitchOptions:
    """The block-wise instance options (``instances.*`` of ``conf/predict.yaml``).

    ``spacing``: ``(Z, Y, X)`` voxel size for the distance transform and the halo, or None.
    ``halo``: voxels (of the finest axis) a block's flood reads beyond its write region.
    """

    method: str = "cc"
    foreground_class: int = 1
    min_distance: int = 5
    min_size: int = 0
    spacing: tuple[float, ...] | None = None
    background_class: int = 0
    interior_class: int = 1
    foreground_threshold: float = 0.5
    seed_threshold: float = 0.5
    halo: int = DEFAULT_HALO

    @property
    def seeded(self) -> bool:
        """Blocks keep the foreground and interior maps and label their seeds."""
        return self.method == "seeded"

    def halo_voxels(self) -> tuple[int, int, int]:
        """The halo along ``(Z, Y, X)``: ``halo`` voxels of the finest axis, as many voxels of
        each axis as cover the same physical distance."""
        if self.spacing is None:
            return (self.halo,) * 3
        finest = min(self.spacing)
        return tuple(math.ceil(self.halo * finest / s) for s in self.spacing)


def stitch_options_of(instances: Any, spacing: Sequence[float] | None) -> StitchOptions:
    """Block-wise options from the prediction's :class:`~unet_seg.instances.methods.
    InstanceOptions` and the file's spatial ``spacing`` (``(Y, X)`` or ``(Z, Y, X)``)."""
    spacing = tuple(float(s) for s in spacing) if instances.anisotropic and spacing else None
    if spacing is not None and len(spacing) == 2:
        spacing = (1.0, *spacing)
    halo = int(instances.halo) if instances.halo else default_halo(instances)
    return StitchOptions(
        instances.method, instances.foreground_class, instances.min_distance, instances.min_size,
        spacing, instances.background_class, instances.interior_class,
        float(instances.foreground_threshold), float(instances.seed_threshold), halo,
    )  # fmt: skip


def default_halo(instances: Any) -> int:
    """:data:`DEFAULT_HALO`, or more for a ``distance`` watershed whose seeds stand far apart
    (objects then are about ``2 * min_distance`` across)."""
    return max(DEFAULT_HALO, 4 * int(instances.min_distance))


def components(mask: np.ndarray) -> tuple[np.ndarray, dict]:
    """Connected components (face connectivity) of a block's bool ``(Z, Y, X)`` mask: uint32
    ids ``1..n`` and a summary ``{count, sizes, first}`` (``first``: each id's first voxel,
    block raster order)."""
    ids, count = ndi.label(mask)
    ids = ids.astype(np.uint32)
    flat = ids.ravel()
    values, first = np.unique(flat, return_index=True)
    sizes = np.bincount(flat)[values]
    keep = values > 0
    return ids, {"count": int(count), "sizes": sizes[keep].tolist(), "first": first[keep].tolist()}


def local_instances(labels: np.ndarray, options: StitchOptions) -> tuple[np.ndarray, dict]:
    """The components of ``options.foreground_class`` in one block's ``(Z, Y, X)`` class map."""
    return components(labels == options.foreground_class)


def local_outputs(
    labels: np.ndarray, maps: np.ndarray | None, options: StitchOptions
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """What a block stores for the instance passes, and the summaries it records.

    ``labels``: the block's ``(Z, Y, X)`` class map; ``maps``: for ``seeded``, its float16
    foreground and interior probabilities ``(2, Z, Y, X)``. Returns ``({store name: array},
    {record key: summary})``: ``instances_local`` holds the components of the objects' voxels
    (the class, or ``foreground > foreground_threshold`` for ``seeded``), and for ``seeded``
    ``instances_seeds`` the components of the seeds and ``instances_maps`` the maps.
    """
    if not options.seeded:
        ids, summary = local_instances(labels, options)
        return {"instances_local": ids}, {"instances": summary}
    if maps is None:
        raise ValueError("seeded instances need the foreground and interior maps of the block")
    mask, seed_mask = object_and_seed_masks(
        maps[0], maps[1], options.foreground_threshold, options.seed_threshold
    )
    ids, summary = components(mask)
    seeds, seed_summary = components(seed_mask)
    arrays = {"instances_local": ids, "instances_seeds": seeds, "instances_maps": maps}
    return arrays, {"instances": summary, "seeds": seed_summary}


def global_raster(first: Sequence[int], block_shape: Sequence[int], origin: Sequence[int],
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
        blocks: the :class:`~unet_seg.blockwise.plan.BlockPlan`.
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
        first[slots] = global_raster(info["first"], block.shape, origin, volume_shape)
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
