"""Coloured overlays of label maps on image slices, and the choice of slices worth showing.

Everything works on single 2D slices ``(Y, X)``; pictures are float arrays in [0, 1], RGB
``(Y, X, 3)`` or RGBA ``(Y, X, 4)`` (alpha 0 where nothing is drawn). Class 0 is background.
Error colours follow the Okabe-Ito palette, which colour-blind readers can tell apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps

from unet_seg.normalization import DEFAULT_PERCENTILES

ALPHA = 0.5  # overlay opacity: the image stays readable under the colour
TRUE_POSITIVE = (0.0, 0.62, 0.45)  # bluish green
FALSE_POSITIVE = (0.84, 0.37, 0.0)  # vermillion: predicted, not in the truth
FALSE_NEGATIVE = (0.34, 0.71, 0.91)  # sky blue: in the truth, missed
ERROR_COLOURS = {"true positive": TRUE_POSITIVE, "false positive": FALSE_POSITIVE,
                 "false negative": FALSE_NEGATIVE}  # fmt: skip
# Foreground classes: Okabe-Ito yellow and reddish purple, unlike any error colour, then tab10's.
_CLASS_COLOURS = ((0.94, 0.89, 0.26), (0.8, 0.47, 0.65), *colormaps["tab10"].colors[4:])
_GOLDEN = 0.618033988749895  # hue step between consecutive instance ids: neighbours differ


def display_range(
    values: np.ndarray, low: float | None = None, high: float | None = None
) -> tuple[float, float]:
    """Grey-value window: the ``low``/``high`` percentiles of the finite values (None: those
    training normalises with, :data:`~unet_seg.normalization.DEFAULT_PERCENTILES`)."""
    low = DEFAULT_PERCENTILES["low"] if low is None else low
    high = DEFAULT_PERCENTILES["high"] if high is None else high
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [low, high])
    return float(lo), float(hi)


def to_gray(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(Y, X)`` image -> float32 grey in [0, 1], ``lo``/``hi`` mapped to black/white."""
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    gray = (np.asarray(image, np.float32) - lo) * scale
    return np.clip(np.nan_to_num(gray), 0.0, 1.0)


def _paint(masks: Sequence[tuple[np.ndarray, Sequence[float]]], shape: tuple[int, ...]):
    rgba = np.zeros((*shape, 4), np.float32)
    for mask, colour in masks:
        rgba[mask, :3] = colour
        rgba[mask, 3] = ALPHA
    return rgba


def class_rgba(labels: np.ndarray) -> np.ndarray:
    """``(Y, X)`` class indices -> ``(Y, X, 4)``: a colour per foreground class."""
    classes = [int(k) for k in np.unique(labels) if k != 0]
    colours = [(labels == k, _CLASS_COLOURS[(k - 1) % len(_CLASS_COLOURS)]) for k in classes]
    return _paint(colours, labels.shape)


def boundaries(ids: np.ndarray) -> np.ndarray:
    """``(Y, X)`` bool: pixels of an object whose right or lower neighbour has another id."""
    edge = np.zeros(ids.shape, bool)
    dy = ids[1:] != ids[:-1]
    dx = ids[:, 1:] != ids[:, :-1]
    edge[1:] |= dy
    edge[:-1] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge & (ids != 0)


def instance_rgba(instances: np.ndarray) -> np.ndarray:
    """``(Y, X)`` object ids -> ``(Y, X, 4)``: a hue per id, object outlines opaque so that
    touching objects stay apart."""
    ids = np.asarray(instances, np.int64)
    hue = (ids * _GOLDEN) % 1.0
    rgb = colormaps["hsv"](hue)[..., :3].astype(np.float32)
    rgba = np.concatenate([rgb, np.zeros((*ids.shape, 1), np.float32)], axis=-1)
    rgba[ids != 0, 3] = ALPHA
    rgba[boundaries(ids), 3] = 1.0
    return rgba


def error_rgba(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(Y, X)`` predicted and true classes -> ``(Y, X, 4)``: true positives green, false
    positives vermillion, false negatives blue. A wrong foreground class counts as a false
    positive (it claims something that is not there)."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction slice {pred.shape} differs from truth slice {truth.shape}")
    hit = (pred == truth) & (truth != 0)
    false_pos = (pred != 0) & (pred != truth)
    false_neg = (truth != 0) & (pred == 0)
    masks = [(hit, TRUE_POSITIVE), (false_pos, FALSE_POSITIVE), (false_neg, FALSE_NEGATIVE)]
    return _paint(masks, pred.shape)


def composite(gray: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """``(Y, X)`` grey under ``(Y, X, 4)`` colour -> ``(Y, X, 3)`` RGB in [0, 1]."""
    alpha = rgba[..., 3:]
    return gray[..., None] * (1.0 - alpha) + rgba[..., :3] * alpha


def subsample_step(shape: Sequence[int], max_side: int) -> int:
    """Stride that brings the longest in-plane side of ``shape`` ``(..., Y, X)`` to ``max_side``
    or below; labels are subsampled by striding so that they keep their exact values."""
    return max(1, math.ceil(max(shape[-2:]) / max_side))


def spread(depth: int, count: int) -> list[int]:
    """``count`` slice indices spread evenly over ``range(depth)``: the centres of equal parts."""
    count = min(count, depth)
    return sorted({int((i + 0.5) * depth / count) for i in range(count)})


def representative_slices(
    foreground: Sequence[float], errors: Sequence[float] | None = None, count: int = 3
) -> list[int]:
    """Up to ``count`` slice indices, in order: the slice with the most wrong voxels (when
    ``errors`` are given and any is non-zero), the one with the most foreground, then slices
    spread over the depth. ``foreground`` and ``errors`` hold one figure per slice."""
    depth = len(foreground)
    chosen: list[int] = []
    if errors is not None and np.max(errors, initial=0) > 0:
        chosen.append(int(np.argmax(errors)))
    if np.max(foreground, initial=0) > 0:
        chosen.append(int(np.argmax(foreground)))
    # Enough evenly spread candidates to fill up after removing the two above.
    chosen += spread(depth, count + 2)
    unique = list(dict.fromkeys(chosen))[:count]
    return sorted(unique)
