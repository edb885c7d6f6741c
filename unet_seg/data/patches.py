"""Patch geometry for overlap-tile training: where patches start, cutting them out with mirroring.

A patch may reach past the image border; the missing part is filled by mirroring the image at the
border, as in the U-Net paper's overlap-tile strategy (Ronneberger et al. 2015, Fig. 2), so a valid
network sees plausible context for border pixels. All functions act on the last ``len(size)`` axes,
so a leading channel axis rides along.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

PAD_MODES = ("reflect", "symmetric", "constant", "edge")


class ForegroundSampler(Protocol):
    """Draws foreground voxels of a region as patch centres; ``len``: how many it can draw."""

    def __len__(self) -> int: ...

    def draw(self, rng: np.random.Generator) -> tuple[int, ...]: ...


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Indices mirrored into ``[0, size)`` without repeating the edge voxel (numpy's ``reflect``
    mode), repeatedly for indices far outside; any shape, int64."""
    index = np.asarray(index, dtype=np.int64)
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.mod(index, period)
    return np.where(index >= size, period - index, index)


def check_patch_size(patch_size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """``patch_size`` as a tuple of ``spatial_dims`` positive ints; an int is used for every axis.

    Raises ``ValueError`` if the number of entries differs from ``spatial_dims`` or one is < 1.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    size = (int(patch_size),) * spatial_dims if np.isscalar(patch_size) else tuple(patch_size)
    if len(size) != spatial_dims:
        raise ValueError(
            f"patch_size {list(size)} has {len(size)} entries but spatial_dims is {spatial_dims}"
        )
    if any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"patch_size entries must be positive integers, got {list(size)}")
    return tuple(int(s) for s in size)


def extract_patch(
    array: np.ndarray,
    start: Sequence[int],
    size: Sequence[int],
    mode: str = "reflect",
    cval: float = 0,
) -> np.ndarray:
    """Cut ``array[..., start:start + size]``, mirroring where the window leaves the array.

    Args:
        array: ``(..., *spatial)``; only the last ``len(size)`` axes are cut.
        start: window start per spatial axis; may be negative or reach past the end.
        size: window size per spatial axis.
        mode: ``numpy.pad`` mode for the outside part: ``"reflect"`` mirrors without repeating the
            border pixel (the overlap-tile mirroring), ``"symmetric"`` repeats it; ``"constant"``
            fills with ``cval`` (e.g. the ignore index for labels).

    Returns:
        ``(..., *size)`` array, a copy.
    """
    if mode not in PAD_MODES:
        raise ValueError(f"padding mode must be one of {PAD_MODES}, got {mode!r}")
    nd = len(size)
    spatial = array.shape[array.ndim - nd :]
    inner, pads, window = [], [], []
    for begin, extent, length in zip(start, size, spatial, strict=True):
        lo, hi = begin, begin + extent
        if lo < 0 or hi > length:  # mirroring needs the pixels up to the opposite side
            lo, hi = 0, length
        before, after = max(lo - begin, 0), max(begin + extent - hi, 0)
        inner.append(slice(lo, hi))
        pads.append((before, after))
        offset = begin - (lo - before)
        window.append(slice(offset, offset + extent))
    patch = array[(Ellipsis, *inner)]
    if not any(b or a for b, a in pads):
        return patch.copy()
    widths = [(0, 0)] * (array.ndim - nd) + pads
    if mode == "constant":
        padded = np.pad(patch, widths, mode="constant", constant_values=cval)
    else:
        padded = np.pad(patch, widths, mode=mode)
    return padded[(Ellipsis, *window)]


def centered_start(center: Sequence[int], size: Sequence[int]) -> tuple[int, ...]:
    """Start of a ``size`` window whose centre pixel is ``center`` (``size // 2`` before it)."""
    return tuple(int(c) - s // 2 for c, s in zip(center, size, strict=True))


def random_center(
    shape: Sequence[int],
    rng: np.random.Generator,
    foreground: ForegroundSampler | None = None,
    foreground_prob: float = 0.0,
) -> tuple[int, ...]:
    """A patch centre: uniform over the image, or with probability ``foreground_prob`` one that
    ``foreground`` draws (foreground oversampling; none if it holds no foreground voxel)."""
    if foreground is not None and len(foreground) and rng.random() < foreground_prob:
        return foreground.draw(rng)
    return tuple(int(rng.integers(s)) for s in shape)


def grid_starts(
    shape: Sequence[int], size: Sequence[int], stride: Sequence[int] | None = None
) -> list[tuple[int, ...]]:
    """Deterministic window starts covering ``shape``, the last window flush with the far edge.

    ``stride`` defaults to ``size`` (no overlap). An axis shorter than the window gets one window
    centred on it (mirror padding fills the rest).
    """
    stride = size if stride is None else stride
    per_axis = []
    for length, extent, step in zip(shape, size, stride, strict=True):
        if length <= extent:
            per_axis.append([-((extent - length) // 2)])
            continue
        starts = list(range(0, length - extent, max(int(step), 1)))
        per_axis.append([*starts, length - extent])
    grids = np.meshgrid(*per_axis, indexing="ij")
    return [tuple(int(g) for g in point) for point in zip(*(g.ravel() for g in grids), strict=True)]


def foreground_coordinates(
    label: np.ndarray, classes: Sequence[int] | None, limit: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to ``limit`` coordinates ``(K, label.ndim)`` of voxels whose class is in ``classes``
    (default: every class > 0), a random subset when there are more, to bound memory."""
    mask = label > 0 if classes is None else np.isin(label, list(classes))
    coords = np.argwhere(mask)
    if len(coords) > limit:
        coords = coords[np.sort(rng.choice(len(coords), limit, replace=False))]
    return coords.astype(np.int32)


class CoordinateSampler:
    """Patch centres drawn uniformly from foreground ``coordinates`` ``(K, spatial_dims)``."""

    def __init__(self, coordinates: np.ndarray) -> None:
        self.coordinates = coordinates

    def __len__(self) -> int:
        return len(self.coordinates)

    def draw(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(int(c) for c in self.coordinates[rng.integers(len(self.coordinates))])
