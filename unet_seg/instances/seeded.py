"""Seeded watershed: objects from the probabilities of a boundary-aware network.

A network trained on background / interior / boundary (``data.target=boundary``) marks the core of
every object as interior, and the voxels where touching objects meet as boundary. The cores are
the seeds: connected components of ``interior > seed_threshold``. Each seed grows over the
foreground (``1 - background``, i.e. interior + boundary, above ``foreground_threshold``) by a
watershed on ``1 - interior``, which is low in the cores and rises towards each object's edge, so
two objects flooded from their own seeds meet on the boundary ridge between them.

The functions are pure ``array -> labels`` maps over any region (a whole volume or one block of
it), 2D or 3D, and hold nothing else in memory.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential

from unet_seg.instances.watershed import watershed_by_component


def foreground_and_interior(
    probs: np.ndarray, background_class: int = 0, interior_class: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``(K, *spatial)`` class probabilities -> foreground ``1 - p[background]`` and interior
    ``p[interior]`` probabilities, float32 ``(*spatial)`` each. With two classes both are the
    object probability (the seeds are then its confident cores)."""
    probs = np.asarray(probs)
    classes = probs.shape[0]
    for name, k in (("background", background_class), ("interior", interior_class)):
        if not 0 <= k < classes:
            raise ValueError(f"{name} class {k} is not one of the {classes} predicted classes")
    foreground = 1.0 - probs[background_class].astype(np.float32)
    return foreground, probs[interior_class].astype(np.float32)


def seeded_watershed(
    foreground: np.ndarray,
    interior: np.ndarray,
    foreground_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size: int = 0,
) -> np.ndarray:
    """Object ids int32 ``(*spatial)`` (1..n, 0 = background) from the foreground and interior
    probabilities ``(*spatial)``.

    Args:
        foreground_threshold: voxels with a higher foreground probability belong to an object.
        seed_threshold: connected voxels with a higher interior probability (within the
            foreground) form one seed; higher values split more touching objects apart, lower
            values keep faint objects whole.
        min_size: objects smaller than this (voxels) are dropped.

    A foreground component without a seed (a faint or thin object) is kept as one object.
    """
    foreground, interior = np.asarray(foreground), np.asarray(interior)
    if foreground.shape != interior.shape:
        raise ValueError(
            f"foreground shape {foreground.shape} differs from interior shape {interior.shape}"
        )
    for name, value in (("foreground", foreground_threshold), ("seed", seed_threshold)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} threshold must be in [0, 1), got {value}")
    mask, seed_mask = object_and_seed_masks(
        foreground, interior, foreground_threshold, seed_threshold
    )
    seeds, _ = ndi.label(seed_mask)
    labels = flood(interior, seeds, mask)
    unseeded = mask & (labels == 0)
    if unseeded.any():
        orphans, _ = ndi.label(unseeded)
        labels = np.where(unseeded, orphans + labels.max(), labels)
    if min_size > 1:
        small = np.bincount(labels.ravel()) < min_size
        small[0] = False
        labels = np.where(small[labels], 0, labels)
    return relabel_sequential(labels)[0].astype(np.int32)


def object_and_seed_masks(
    foreground: np.ndarray, interior: np.ndarray, foreground_threshold: float, seed_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """The object voxels ``foreground > foreground_threshold`` and, among them, the seed voxels
    ``interior > seed_threshold``: bool ``(*spatial)`` each (compared in the maps' own dtype, so
    a float16 scratch map gives the same masks wherever it is read)."""
    mask = foreground > foreground_threshold
    return mask, mask & (interior > seed_threshold)


def flood(interior: np.ndarray, seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grow the labelled ``seeds`` (any integer ids, 0 = none) over ``mask`` by a watershed on
    ``1 - interior``; ``(*spatial)`` each. Mask voxels no seed reaches stay 0."""
    return watershed_by_component(1.0 - interior, seeds, mask)
