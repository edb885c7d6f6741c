"""The watershed pass of block-wise instances (``distance`` and ``seeded``), with a halo.

A watershed cannot be stitched at a block face the way connected components can: two objects
split by it touch each other. So the objects' *identities* are fixed globally first and every
block then floods its region, plus a halo, from them:

- the components of the object voxels (``instances_local``, stitched by
  :func:`~unet_seg.instances.stitch.merge_table`) and, for ``seeded``, the components of the
  seed voxels (``instances_seeds``), stitched the same way: global ids exactly equal to
  ``scipy.ndimage.label`` of the whole volume, however large the objects;
- :func:`flood_block` reads its write region grown by the halo (clipped at the volume's edges)
  of those global ids (and the float16 foreground / interior maps), runs the whole-volume
  method there (:func:`seeded_keys`, :func:`distance_keys`) and keeps its own write region.
  Every voxel gets the **key** of its object: the global seed id (``seeded``), the raster index
  of the first voxel of its distance-transform peak (``distance``), or ``COMPONENT_KEY +`` the
  global component id for a component without any seed. Keys sort in the order in which the
  whole-volume methods number their objects;
- :func:`key_table` numbers the keys ``1..N`` in that order after dropping objects under
  ``min_size`` voxels summed over all blocks (``seeded``; ``distance`` drops small components
  before splitting, as the whole-volume method does).

Invariant (``tests/blockwise/test_flood.py``): on every connected component of object voxels
that touches a block's write region and lies, grown by one voxel, inside the block's halo
region, the result equals the whole-volume method
(:func:`~unet_seg.instances.methods.seeded_from`,
:func:`~unet_seg.instances.methods.from_class_map`) exactly, ids included; so a halo wider than
the objects and clusters of touching objects gives the whole-volume result. (The distance to the
background, its peaks, and the watershed queue of a component all depend on that component and
its one-voxel rim only.) A larger component is still one object or split consistently across
faces where its seeds agree, but its split near a face may differ.
Memory per block: its halo region of the maps and ids.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage.segmentation import relabel_sequential

from unet_seg.blockwise.plan import BlockPlan, Region
from unet_seg.blockwise.task import block_info, file_box, file_order, tiling_order
from unet_seg.inference.inputs import Layout
from unet_seg.instances.seeded import flood, object_and_seed_masks
from unet_seg.instances.stitch import MergeTable, StitchOptions, global_raster
from unet_seg.instances.watershed import distance_watershed

COMPONENT_KEY = 1 << 62  # keys of seedless components: after every seed key, as numbered


def halo_region(write: Region, halo: tuple[int, ...], shape: tuple[int, ...]) -> Region:
    """``write`` grown by ``halo`` voxels per axis, clipped to the volume ``shape``."""
    return tuple(
        (max(0, a - h), min(s, b + h)) for (a, b), h, s in zip(write, halo, shape, strict=True)
    )


def _box(region: Region) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in region)


def _inside(part: Region, region: Region) -> tuple[slice, ...]:
    """Where ``part`` lies in an array of ``region``."""
    return tuple(slice(a - r, b - r) for (a, b), (r, _) in zip(part, region, strict=True))


def read_global(store: Any, table: MergeTable, blocks: BlockPlan, layout: Layout,
                region: Region) -> np.ndarray:  # fmt: skip
    """The global ids (int64 ``(Z, Y, X)``) of ``region``: the local ids ``store`` holds there,
    each block's part relabelled through ``table``."""
    local = tiling_order(layout, store.read(file_box(layout, _box(region))))
    out = np.zeros(local.shape, np.int64)
    sizes = blocks.block_shape
    span = [range(a // s, (b - 1) // s + 1) for (a, b), s in zip(region, sizes, strict=True)]
    for position in np.ndindex(*[len(r) for r in span]):
        grid = [r[p] for r, p in zip(span, position, strict=True)]
        index = int(np.ravel_multi_index(grid, blocks.grid))
        part = tuple(
            (max(a, g * s), min(b, (g + 1) * s))
            for (a, b), g, s in zip(region, grid, sizes, strict=True)
        )  # the block's write region (not blocks.block(): that also plans its read region)
        inside = _inside(part, region)
        out[inside] = table.relabel(index, local[inside])
    return out


def seeded_keys(maps: np.ndarray, seeds: np.ndarray, components: np.ndarray,
                options: StitchOptions) -> np.ndarray:  # fmt: skip
    """Keys (int64 ``(Z, Y, X)``) of ``seeded`` objects from a region's float16 foreground and
    interior ``maps`` ``(2, Z, Y, X)``, global seed ids and global component ids."""
    mask, _ = object_and_seed_masks(
        maps[0], maps[1], options.foreground_threshold, options.seed_threshold
    )
    keys = flood(maps[1], seeds, mask).astype(np.int64)
    seedless = mask & (keys == 0)
    keys[seedless] = COMPONENT_KEY + components[seedless]
    return keys


def distance_keys(components: np.ndarray, options: StitchOptions, origin: tuple[int, ...],
                  volume_shape: tuple[int, ...]) -> np.ndarray:  # fmt: skip
    """Keys (int64 ``(Z, Y, X)``) of ``distance`` objects from a region's global component ids
    (small components already 0), the region starting at ``origin`` of the volume."""
    mask = components > 0
    keys = np.zeros(mask.shape, np.int64)
    if not mask.any():
        return keys
    numbered = relabel_sequential(components)[0]  # peaks are per component, whatever its id
    labels, markers, count = distance_watershed(numbered, options.min_distance, options.spacing)
    flat = markers.ravel()
    where = np.flatnonzero(flat)
    ids, first = np.unique(flat[where], return_index=True)
    lut = np.zeros(count + 1, np.int64)
    lut[ids] = global_raster(where[first], mask.shape, origin, volume_shape) + 1
    keys = lut[labels]
    missed = mask & (labels == 0)  # components without a peak stay whole, as in the volume
    keys[missed] = COMPONENT_KEY + components[missed]
    return keys


@dataclass
class FloodJob:
    """The stores and tables a block's flood needs (pickles as paths and small arrays).

    ``components``/``seeds``/``maps``: the first pass's scratch stores; ``flooded``: where each
    block writes its local ids ``1..n`` and records their keys and sizes.
    """

    layout: Layout
    blocks: BlockPlan
    options: StitchOptions
    components: Any
    component_table: MergeTable
    flooded: Any
    seeds: Any = None
    seed_table: MergeTable | None = None
    maps: Any = None


def flood_block(job: FloodJob, index: int) -> dict:
    """Flood block ``index`` within its halo region, write its local ids, record their keys."""
    start = time.perf_counter()
    block = job.blocks.block(index)
    shape = job.blocks.volume_shape
    region = halo_region(block.write, job.options.halo_voxels(), shape)
    read = (job.blocks, job.layout, region)
    components = read_global(job.components, job.component_table, *read)
    if job.options.seeded:
        maps = tiling_order(job.layout, job.maps.read(file_box(job.layout, _box(region))))
        keys = seeded_keys(maps, read_global(job.seeds, job.seed_table, *read), components,
                           job.options)  # fmt: skip
    else:
        keys = distance_keys(components, job.options, tuple(a for a, _ in region), shape)
    own = keys[_inside(block.write, region)]
    # Local ids 1..n in key order; 0 leads so that the background keeps id 0.
    values, inverse = np.unique(np.concatenate([[0], own.ravel()]), return_inverse=True)
    local = inverse[1:].reshape(own.shape).astype(np.uint32)
    sizes = np.bincount(local.ravel(), minlength=len(values))[1:]
    job.flooded.write(file_box(job.layout, block.write_box), file_order(job.layout, local))
    info = block_info(block, "computed", time.perf_counter() - start)
    info["flood"] = {"keys": values[1:].tolist(), "sizes": sizes.tolist()}
    job.flooded.record(index, info)
    return info


def key_table(floods: dict[int, dict], blocks: int, min_size: int = 0) -> MergeTable:
    """The global ids of the keyed local ids of ``blocks`` blocks (``floods``: block index ->
    ``{keys, sizes}``): keys in sorted order numbered ``1..N``, objects with fewer than
    ``min_size`` voxels over all blocks 0."""
    keys = [np.asarray(floods[i]["keys"], np.int64) for i in range(blocks)]
    sizes = [np.asarray(floods[i]["sizes"], np.int64) for i in range(blocks)]
    offsets = np.concatenate([[0], np.cumsum([len(k) for k in keys])]).astype(np.int64)
    every = np.concatenate([np.zeros(0, np.int64), *keys])
    unique, inverse = np.unique(every, return_inverse=True)
    total = np.bincount(inverse, weights=np.concatenate([np.zeros(0), *sizes]),
                        minlength=len(unique))  # fmt: skip
    keep = total >= max(min_size, 1)
    number = np.zeros(len(unique), np.int64)
    number[keep] = np.arange(1, int(keep.sum()) + 1)
    return MergeTable(offsets, np.concatenate([[0], number[inverse]]), int(keep.sum()))
