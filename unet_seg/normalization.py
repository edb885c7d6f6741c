"""Intensity normalisation, one definition for training and prediction.

Each image is scaled so that its ``low`` and ``high`` percentiles map to 0 and 1, without
clipping (bright outliers stay distinguishable). Training computes the percentiles of each whole
image in memory; prediction estimates them from a strided subsample of a volume that may be larger
than memory (:func:`percentile_range`). The percentiles a model was trained with are stored in its
checkpoint, so prediction normalises the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

# Robust to a few saturated or dead pixels, while keeping nearly the whole intensity range.
DEFAULT_PERCENTILES: dict[str, float] = {"low": 1.0, "high": 99.8}
_PERCENTILE_SAMPLES = 4_000_000  # voxels read to estimate the percentiles: stable, and bounded


def percentiles(normalization: Mapping[str, Any] | None = None) -> tuple[float, float]:
    """``(low, high)`` from a ``{low, high}`` mapping, defaults filled in; ``ValueError`` unless
    ``0 <= low < high <= 100``."""
    merged = {**DEFAULT_PERCENTILES, **(normalization or {})}
    low, high = float(merged["low"]), float(merged["high"])
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(
            f"normalisation percentiles need 0 <= low < high <= 100, got {low}, {high}"
        )
    return low, high


def scale_to_unit(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(values - lo) / (hi - lo)`` as float32, any shape; zeros if ``hi <= lo`` (constant)."""
    values = np.asarray(values, dtype=np.float32)
    if hi <= lo:
        return np.zeros_like(values)
    return ((values - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32, copy=False)


def normalize_percentile(
    array: np.ndarray,
    low: float = DEFAULT_PERCENTILES["low"],
    high: float = DEFAULT_PERCENTILES["high"],
) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of ``array`` to 0/1, without clipping.

    Args:
        array: any shape, e.g. ``(*spatial)`` or ``(C, *spatial)``; percentiles are taken over all
            values, so channels share one scale.
        low, high: percentiles in [0, 100], ``low < high``.

    Returns:
        float32 array of the same shape. A constant array maps to zeros.
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"normalize_percentile: need 0 <= low < high <= 100, got {low}, {high}")
    values = np.asarray(array, dtype=np.float32)
    if values.size == 0:
        raise ValueError("normalize_percentile: empty array")
    lo, hi = np.percentile(values, [low, high])
    if not np.isfinite(hi - lo):
        raise ValueError("normalize_percentile: array contains NaN or Inf")
    return scale_to_unit(values, float(lo), float(hi))


def percentile_range(volume: Any, low: float, high: float) -> tuple[float, float]:
    """The ``low``/``high`` percentiles of a strided subsample of ``volume``.

    ``volume`` is indexable like an array (e.g. a :class:`unet_seg.io.LazyVolume`). Reads every
    n-th z-slice and in-plane every m-th voxel (``n`` about ``m``, so that slices from the whole
    depth count) so that about ``_PERCENTILE_SAMPLES`` values are used, one slice at a time.
    """
    shape = volume.shape
    stride = max(1, math.ceil(math.prod(shape) / _PERCENTILE_SAMPLES))
    if len(shape) == 2 or stride == 1:
        sample = np.asarray(volume[...], dtype=np.float32).ravel()[::stride]
    else:
        z_step = min(shape[0], max(1, round(stride ** (1 / 3))))
        plane = max(1, math.ceil(math.sqrt(stride / z_step)))
        rows = [
            np.asarray(volume[z, ::plane, ::plane], dtype=np.float32).ravel()
            for z in range(0, shape[0], z_step)
        ]
        sample = np.concatenate(rows)
    if not np.isfinite(sample).all():
        raise ValueError(f"{getattr(volume, 'path', None)}: NaN/Inf values in the image data")
    lo, hi = np.percentile(sample, [low, high])
    return float(lo), float(hi)
