"""The watersheds behind instances: one run per connected component, and the ``distance``
method's split of touching objects at the maxima of their distance transform.

Both the whole-volume method (:func:`instance_labels`) and the block-wise flood
(:func:`unet_seg.blockwise.flood.distance_keys`) split through :func:`distance_watershed`, so
a block that holds a whole component gets the whole volume's split exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import remove_small_objects
from skimage.segmentation import relabel_sequential, watershed


def watershed_by_component(image: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``watershed(image, markers, mask=mask)`` run on each connected component of ``mask`` by
    itself (``(*spatial)`` each; unreached mask voxels stay 0).

    Components never meet, so this is the one watershed, except where equal values tie: the
    queue then orders them by the heap's history, which over the whole array depends on every
    other component. Component by component the result of a component depends on it alone, so a
    block that holds the whole component gets the whole volume's result exactly
    (:mod:`unet_seg.blockwise.flood`).
    """
    components, _ = ndi.label(mask)
    out = np.zeros(mask.shape, markers.dtype)
    for number, box in enumerate(ndi.find_objects(components), start=1):
        own = components[box] == number
        seeds = np.where(own, markers[box], 0)
        if seeds.any():
            out[box][own] = watershed(image[box], seeds, mask=own)[own]
    return out


def distance_watershed(
    components: np.ndarray, min_distance: int, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Split the objects of ``components`` ``(*spatial)`` (sequential ids 1..n, 0 outside) by a
    watershed on the negated distance transform, seeded at its local maxima at least
    ``min_distance`` voxels apart within each component; ``spacing`` makes the distance
    anisotropic (z-stacks).

    Returns ``(labels, markers, count)``: the watershed's labels (0 where a component has no
    maximum), the markers it grew from (neighbouring maxima on a plateau are one marker, not
    several) and their number.
    """
    mask = components > 0
    distance = ndi.distance_transform_edt(mask, sampling=spacing)
    peaks = peak_local_max(
        distance, min_distance=min_distance, labels=components, exclude_border=False
    )
    seeds = np.zeros(mask.shape, dtype=bool)
    seeds[tuple(peaks.T)] = True
    markers, count = ndi.label(seeds, structure=np.ones((3,) * mask.ndim))
    return watershed_by_component(-distance, markers, mask), markers, count


def instance_labels(
    mask: np.ndarray,
    split: bool = True,
    min_distance: int = 5,
    min_size: int = 0,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Label the objects of a binary ``mask`` ``(*spatial)``; returns int32 labels 1..n, 0 outside.

    Connected components (face connectivity); with ``split`` touching objects are separated by
    :func:`distance_watershed`. Components smaller than ``min_size`` voxels are dropped.
    """
    mask = np.asarray(mask, dtype=bool)
    if min_size > 0:
        mask = remove_small_objects(mask, max_size=min_size - 1)
    components, count = ndi.label(mask)
    if not split or count == 0:
        return components.astype(np.int32)
    labels, _, _ = distance_watershed(components, min_distance, spacing)
    missed = mask & (labels == 0)  # components without a maximum keep their own label
    if missed.any():
        labels[missed] = components[missed] + labels.max()
    return relabel_sequential(labels)[0].astype(np.int32)
