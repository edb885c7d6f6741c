"""Intensity normalisation and data augmentation for (C, *spatial) images with aligned labels."""

from __future__ import annotations

import numpy as np

from unet_seg.data.elastic import elastic_deform

__all__ = ["elastic_deform", "normalize_percentile"]


def normalize_percentile(array: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of ``array`` to 0/1, without clipping.

    Args:
        array: any shape, e.g. ``(*spatial)`` or ``(C, *spatial)``; percentiles are taken over all
            values, so channels share one scale.
        low, high: percentiles in [0, 100], ``low < high``.

    Returns:
        float32 array of the same shape. Values outside the percentile range map below 0 or above 1
        (not clipped), so bright outliers stay distinguishable. A constant array maps to zeros.
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"normalize_percentile: need 0 <= low < high <= 100, got {low}, {high}")
    values = np.asarray(array, dtype=np.float32)
    if values.size == 0:
        raise ValueError("normalize_percentile: empty array")
    lo, hi = np.percentile(values, [low, high])
    scale = hi - lo
    if not np.isfinite(scale):
        raise ValueError("normalize_percentile: array contains NaN or Inf")
    if scale <= 0:
        return np.zeros_like(values)
    return ((values - lo) / scale).astype(np.float32, copy=False)
