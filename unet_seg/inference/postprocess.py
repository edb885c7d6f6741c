"""From class probabilities to what is written: label maps, stored probabilities, instances."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import remove_small_objects
from skimage.segmentation import relabel_sequential, watershed

PROBABILITY_DTYPES = ("float16", "uint8")


def label_dtype(num_classes: int) -> np.dtype:
    """The smallest unsigned dtype holding class indices ``0 .. num_classes - 1``."""
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16)


ARGMAX_CHUNK_VOXELS = 1 << 20  # argmax's int64 result: 8 MB a chunk, not 8 bytes a voxel at once


def probabilities_to_labels(probs: np.ndarray) -> np.ndarray:
    """``(K, *spatial)`` probabilities -> ``(*spatial)`` class indices (argmax, smallest dtype).

    Computed a few rows of the first spatial axis at a time, so that numpy's int64 argmax never
    holds more than :data:`ARGMAX_CHUNK_VOXELS` at once (a whole block's would be 8x its labels).
    """
    probs = np.asarray(probs)
    labels = np.empty(probs.shape[1:], label_dtype(probs.shape[0]))
    if labels.ndim == 0 or labels.size == 0:
        return probs.argmax(axis=0).astype(labels.dtype)
    rows = max(1, ARGMAX_CHUNK_VOXELS // max(1, labels[0].size))
    for start in range(0, len(labels), rows):
        labels[start : start + rows] = probs[:, start : start + rows].argmax(axis=0)
    return labels


def store_probabilities(probs: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities in ``[0, 1]`` as ``float16`` or as ``uint8`` scaled by 255 (rounded)."""
    if dtype == "float16":
        return probs.astype(np.float16)
    if dtype == "uint8":
        return np.rint(np.clip(probs, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"probability dtype must be one of {PROBABILITY_DTYPES}, got {dtype!r}")


def instance_labels(
    mask: np.ndarray,
    split: bool = True,
    min_distance: int = 5,
    min_size: int = 0,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Label the objects of a binary ``mask`` ``(*spatial)``; returns int32 labels 1..n, 0 outside.

    Connected components (face connectivity); with ``split`` touching objects are separated by a
    watershed on the negated distance transform, seeded at its local maxima at least
    ``min_distance`` voxels apart. ``spacing`` makes the distance anisotropic (z-stacks).
    Components smaller than ``min_size`` voxels are dropped.
    """
    mask = np.asarray(mask, dtype=bool)
    if min_size > 0:
        mask = remove_small_objects(mask, max_size=min_size - 1)
    components, count = ndi.label(mask)
    if not split or count == 0:
        return components.astype(np.int32)
    distance = ndi.distance_transform_edt(mask, sampling=spacing)
    peaks = peak_local_max(
        distance, min_distance=min_distance, labels=components, exclude_border=False
    )
    seeds = np.zeros(mask.shape, dtype=bool)
    seeds[tuple(peaks.T)] = True
    # Neighbouring maxima on a plateau become one seed, not several.
    markers, _ = ndi.label(seeds, structure=np.ones((3,) * mask.ndim))
    labels = watershed_by_component(-distance, markers, mask)
    missed = mask & (labels == 0)  # components without a maximum keep their own label
    if missed.any():
        labels[missed] = components[missed] + labels.max()
    return relabel_sequential(labels)[0].astype(np.int32)


def watershed_by_component(image: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``watershed(image, markers, mask=mask)`` run on each connected component of ``mask`` by
    itself (``(*spatial)`` each; unreached mask voxels stay 0).

    Components never meet, so this is the one watershed, except where equal values tie: the
    queue then orders them by the heap's history, which over the whole array depends on every
    other component. Component by component the result of a component depends on it alone, so a
    block that holds the whole component gets the whole volume's result exactly
    (:mod:`unet_seg.inference.flood`).
    """
    components, _ = ndi.label(mask)
    out = np.zeros(mask.shape, markers.dtype)
    for number, box in enumerate(ndi.find_objects(components), start=1):
        own = components[box] == number
        seeds = np.where(own, markers[box], 0)
        if seeds.any():
            out[box][own] = watershed(image[box], seeds, mask=own)[own]
    return out
