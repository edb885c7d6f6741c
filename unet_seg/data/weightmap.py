"""The weight map of the U-Net paper (Ronneberger et al. 2015, Eq. 2).

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

``w_c`` balances the class frequencies; ``d1``/``d2`` are the distances to the nearest and the
second-nearest object, so thin gaps between touching objects (the membrane between two cells)
weigh most. The border term is applied to pixels outside every object; it vanishes where fewer
than two objects are near.

Speed: the distance to each object is computed only in a window around it, its bounding box grown
by the cut-off radius ``R = sigma * sqrt(2 ln(1e6))`` (5.3 sigma). Beyond ``R`` from the second
object ``d1 + d2 > R`` so the border term is below ``1e-6 * w0`` and is set to 0: the result is
exact up to that tolerance, and the cost is objects x window size instead of objects x image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.ndimage

if TYPE_CHECKING:
    from unet_seg.data.regions import Region

RELATIVE_TOLERANCE = 1e-6  # border terms below this fraction of w0 are dropped


def class_weight_map(
    labels: np.ndarray, class_weights: str | Sequence[float] | None = "balanced"
) -> np.ndarray:
    """``w_c`` for every pixel of ``labels`` ``(*spatial)`` (int classes; negative = ignored, 0).

    ``"balanced"``: ``w_c = n / (K * n_c)`` over the K classes present, so every class sums to
    ``n / K`` and the mean weight is 1. ``None``: ones. A sequence: ``class_weights[c]``.
    """
    labels = np.asarray(labels)
    valid = labels >= 0
    weights = np.zeros(labels.shape, dtype=np.float32)
    if class_weights is None:
        weights[valid] = 1.0
        return weights
    values = labels[valid].astype(np.int64)
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(
                f"class_weights must be 'balanced', None or a list, got {class_weights!r}"
            )
        counts = np.bincount(values)
        present = counts > 0
        table = np.zeros(counts.shape, dtype=np.float64)
        table[present] = values.size / (present.sum() * counts[present])
    else:
        table = np.asarray(class_weights, dtype=np.float64)
        if values.size and values.max() >= table.size:
            raise ValueError(
                f"class_weights has {table.size} entries but labels contain class {values.max()}"
            )
    weights[valid] = table[values]
    return weights


def nearest_two_distances(
    objects: np.ndarray, cutoff: float, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``(d1, d2)`` from every pixel to the nearest and second-nearest object.

    Args:
        objects: int ``(*spatial)``, 0 = no object, each positive id one object.
        cutoff: distances beyond it are not computed and come back as ``inf``.
        spacing: voxel size per axis (same units as ``cutoff``); default 1.

    Returns:
        two float64 arrays like ``objects``; 0 inside an object for its own distance.
    """
    spacing = _spacing(spacing, objects.ndim)
    margin = [int(np.ceil(cutoff / s)) for s in spacing]
    d1 = np.full(objects.shape, np.inf)
    d2 = np.full(objects.shape, np.inf)
    for index, box in enumerate(scipy.ndimage.find_objects(objects), start=1):
        if box is None:
            continue
        window = tuple(
            slice(max(b.start - m, 0), min(b.stop + m, n))
            for b, m, n in zip(box, margin, objects.shape, strict=True)
        )
        outside = objects[window] != index
        distance = scipy.ndimage.distance_transform_edt(outside, sampling=spacing)
        near1, near2 = d1[window], d2[window]  # views: updated in place
        np.minimum(near2, np.maximum(near1, distance), out=near2)
        np.minimum(near1, distance, out=near1)
    return d1, d2


def unet_weight_map(
    labels: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: str | Sequence[float] | None = "balanced",
    instances: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    foreground: int = 1,
) -> np.ndarray:
    """The paper's weight map for a class map ``labels`` ``(*spatial)``, 2D or 3D.

    Args:
        labels: int class per pixel; negative values (ignored pixels) get weight 0.
        w0, sigma: height and width (in ``spacing`` units) of the border term; the paper uses
            10 and ~5 pixels.
        class_weights: see ``class_weight_map``.
        instances: int object ids ``(*spatial)``, 0 = none, restricted to the ``foreground``
            voxels of ``labels``. Default: connected components
            (face-connected) of ``labels == foreground``. For ISBI 2012 the objects are the
            cells, so pass ``foreground`` = the cell class and the membrane gets the border term.
        spacing: voxel size per axis, array order; distances and ``sigma`` use its units.

    Returns:
        float32 array like ``labels``.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer classes, got dtype {labels.dtype}")
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be 2D or 3D, got shape {labels.shape}")
    if sigma <= 0 or w0 < 0:
        raise ValueError(f"need sigma > 0 and w0 >= 0, got sigma={sigma}, w0={w0}")
    weights = class_weight_map(labels, class_weights)
    if instances is None:
        instances, _ = scipy.ndimage.label(labels == foreground)
    elif instances.shape != labels.shape:
        raise ValueError(f"instances shape {instances.shape} != labels shape {labels.shape}")
    else:
        # Instance files often keep touching objects whole while the label draws a background
        # seam between them; the seam is exactly where the border term belongs, so an object is
        # only its foreground-class voxels.
        instances = np.where(labels == foreground, instances, 0)
    if w0 == 0:
        return weights
    cutoff = sigma * np.sqrt(2.0 * np.log(1.0 / RELATIVE_TOLERANCE))
    d1, d2 = nearest_two_distances(np.asarray(instances), cutoff, spacing)
    gap = (instances == 0) & np.isfinite(d2) & (labels >= 0)
    weights[gap] += (w0 * np.exp(-((d1[gap] + d2[gap]) ** 2) / (2.0 * sigma**2))).astype(np.float32)
    return weights


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim or min(spacing) <= 0:
        raise ValueError(f"spacing must be {ndim} positive values, got {spacing}")
    return spacing


def add_weight_maps(regions: Sequence[Region], weight_map: Mapping[str, Any] | None) -> None:
    """Each region's weight map, computed once: ``unet_weight_map(label, **weight_map)``."""
    if not weight_map:
        return
    for region in regions:
        # sigma counts in-plane pixels, as in the paper, while anisotropic axes keep their ratio
        spacing = None if region.spacing is None else np.asarray(region.spacing, np.float64)
        spacing = None if spacing is None else tuple(spacing / spacing.min())
        kwargs = {"spacing": spacing, **weight_map}
        if region.instances is not None:
            kwargs["instances"] = region.instances
        region.weight = np.asarray(unet_weight_map(region.label, **kwargs), dtype=np.float32)
