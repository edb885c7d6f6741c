"""From class probabilities to what is written: label maps and stored probabilities (instances:
:mod:`unet_seg.instances`)."""

from __future__ import annotations

import numpy as np

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
