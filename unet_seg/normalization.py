"""Intensity normalisation, one definition for training and prediction.

Two modes, chosen by the ``normalization`` mapping a model is trained with and stored in its
checkpoint (and in exported files), so prediction normalises the same way:

- percentiles ``{low, high}`` (the default, for microscopy counts): each image is scaled so that
  its ``low`` and ``high`` percentiles map to 0 and 1, without clipping (bright outliers stay
  distinguishable). Training computes the percentiles of each whole image in memory; prediction
  estimates them from a strided subsample of a volume that may be larger than memory
  (:func:`percentile_range`).
- a fixed window ``{window: [a, b], mean: m, std: s}`` (for absolute intensities, nnU-Net's CT
  scheme): every image is clipped to ``[a, b]`` (the training set's foreground 0.5 / 99.5
  percentiles) and z-scored by the training set's foreground ``m`` and ``s``, the same numbers for
  every image, so nothing is read from an image to normalise it. All channels share the window.

Both are ``clip`` (or none) followed by the affine map :func:`scale_to_unit` with ``lo, hi``:
``hi - lo`` is the scale (``s`` for the window, ``lo = m``), so every reader applies one
definition (:func:`intensity_range`, :func:`clip_values`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
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


def fixed_window(
    normalization: Mapping[str, Any] | None,
) -> tuple[float, float, float, float] | None:
    """``(clip low, clip high, mean, std)`` of a fixed-window normalisation, None for
    percentiles (no ``window`` key); ``ValueError`` unless ``low < high``, ``std > 0`` and all
    are finite numbers."""
    if not normalization or normalization.get("window") is None:
        return None
    try:
        low, high = (float(v) for v in normalization["window"])
        mean, std = float(normalization["mean"]), float(normalization["std"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"a fixed normalisation window needs window: [low, high], mean and std, got "
            f"{dict(normalization)}"
        ) from err
    if not (math.isfinite(low + high + mean + std) and low < high and std > 0):
        raise ValueError(
            f"a fixed normalisation window needs finite low < high and std > 0, got "
            f"window [{low}, {high}], mean {mean}, std {std}"
        )
    return low, high, mean, std


def check_normalization(normalization: Mapping[str, Any] | None) -> dict[str, Any]:
    """The normalisation a model is stored with, in its plain form: ``{low, high}`` (defaults
    filled in) or ``{window, mean, std}``; ``ValueError`` for either's nonsense."""
    window = fixed_window(normalization)
    if window is not None:
        return {"window": [window[0], window[1]], "mean": window[2], "std": window[3]}
    return dict(zip(("low", "high"), percentiles(normalization), strict=True))


def intensity_range(
    normalization: Mapping[str, Any] | None, sample: Callable[[float, float], tuple[float, float]]
) -> tuple[float, float, tuple[float, float] | None]:
    """``(lo, hi, clip)`` that normalise one image: a fixed window's ``(mean, mean + std,
    (a, b))``, or ``sample(low, high)`` (the image's percentiles, read only in this mode) and no
    clip."""
    window = fixed_window(normalization)
    if window is not None:
        low, high, mean, std = window
        return mean, mean + std, (low, high)
    lo, hi = sample(*percentiles(normalization))
    return float(lo), float(hi), None


def clip_values(values: np.ndarray, clip: tuple[float, float] | None) -> np.ndarray:
    """``values`` clipped to ``clip`` (as float32), or unchanged without one."""
    if clip is None:
        return values
    return np.clip(np.asarray(values, dtype=np.float32), np.float32(clip[0]), np.float32(clip[1]))


def normalize(array: np.ndarray, normalization: Mapping[str, Any] | None) -> np.ndarray:
    """``array`` (any shape, e.g. ``(C, *spatial)``) normalised as ``normalization`` says
    (module docstring): float32, same shape; ``ValueError`` for NaN/Inf or an empty array."""
    window = fixed_window(normalization)
    if window is None:
        return normalize_percentile(array, *percentiles(normalization))
    values = np.asarray(array, dtype=np.float32)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("normalize: the array is empty or contains NaN or Inf")
    lo, hi, clip = intensity_range(normalization, lambda low, high: (0.0, 0.0))
    return scale_to_unit(clip_values(values, clip), lo, hi)


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
