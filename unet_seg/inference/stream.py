"""Running a tile plan over a volume, one z-slab at a time.

Stages (as in MONAI's ``sliding_window_inference``): for each slab of z-rows: read the rows the
windows need (mirrored outside the volume) -> batched windows -> model -> accumulate (overwrite
for overlap-tile, weighted sums for a blended sliding window) -> normalise the rows no later
window touches -> yield them. Only one slab of input and output is held at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import numpy as np
from tqdm.auto import tqdm

from unet_seg.data.patches import reflect_index
from unet_seg.inference.tiling import AxisPlan, TilePlan, importance_map, plan_tiles


def _slab_groups(plan: TilePlan, batch_size: int) -> list[tuple[int, ...]]:
    """z-window starts grouped so that one group fills about one batch (memory: one slab)."""
    z_starts = plan.axes[0].starts
    per_row = math.prod(len(a.starts) for a in plan.axes[1:])
    rows = max(1, math.ceil(batch_size / per_row))
    return [z_starts[i : i + rows] for i in range(0, len(z_starts), rows)]


Box = tuple[slice, slice, slice]  # a (Z, Y, X) region of the volume


def restrict_plan(plan: TilePlan, region: Sequence[tuple[int, int]]) -> TilePlan:
    """The windows of ``plan`` whose output touches ``region`` (``(start, stop)`` per axis).

    Every voxel of ``region`` keeps every window that covers it, in the same order, so running
    the restricted plan gives exactly the whole plan's values there: the same last writer for
    overlap-tile, the same weighted sum for a blended sliding window.
    """
    axes = []
    for axis, (start, stop) in zip(plan.axes, region, strict=True):
        starts = tuple(s for s in axis.starts if s < stop and s + axis.out_size > start)
        if not starts:
            raise ValueError(f"region {tuple(region)} lies outside the planned volume")
        axes.append(replace(axis, starts=starts))
    return TilePlan(tuple(axes), plan.blend)


def input_indices(axis: AxisPlan) -> np.ndarray:
    """Volume indices (mirrored at the edges) of the input rows the windows of ``axis`` read."""
    start = axis.starts[0] - axis.lo
    return reflect_index(np.arange(start, axis.starts[-1] - axis.lo + axis.in_size), axis.size)


class _RowAccumulator:
    """Output rows ``[z0, z0 + rows)`` of ``region`` still being written: ``(K, rows, Y, X)``
    probabilities (weighted sums when blending) and ``(rows, Y, X)`` weight sums, where
    ``Y, X`` is the region's plane."""

    def __init__(self, region: Sequence[tuple[int, int]], weight: np.ndarray | None) -> None:
        self.origin = tuple(int(a) for a, _ in region)
        self.stop = tuple(int(b) for _, b in region)
        self.plane = (self.stop[1] - self.origin[1], self.stop[2] - self.origin[2])
        self.weight, self.z0 = weight, self.origin[0]
        self.probs: np.ndarray | None = None
        self.weights = np.zeros((0, *self.plane), np.float32)

    def grow(self, classes: int, end: int) -> None:
        """Make room for rows up to ``end`` (exclusive)."""
        if self.probs is None:
            self.probs = np.zeros((classes, 0, *self.plane), np.float32)
        extra = end - self.z0 - self.probs.shape[1]
        if extra > 0:
            zeros = np.zeros((classes, extra, *self.plane), np.float32)
            self.probs = np.concatenate([self.probs, zeros], axis=1)
            if self.weight is not None:
                zeros = np.zeros((extra, *self.plane), np.float32)
                self.weights = np.concatenate([self.weights, zeros])

    def add(self, start: tuple[int, int, int], probs: np.ndarray) -> None:
        """Put one window's ``(K, *out)`` probabilities at ``start`` (z, y, x), cropped to the
        region."""
        src, dst = [], []
        base = (self.z0, self.origin[1], self.origin[2])
        for s, n, a, b, o in zip(start, probs.shape[1:], self.origin, self.stop, base, strict=True):
            lo, hi = max(s, a), min(s + n, b)
            src.append(slice(lo - s, hi - s))
            dst.append(slice(lo - o, hi - o))
        p = probs[(slice(None), *src)]
        if self.weight is None:  # overlap-tile: a later tile overwrites the duplicate region
            self.probs[(slice(None), *dst)] = p
        else:
            w = self.weight[tuple(src)]
            self.probs[(slice(None), *dst)] += p * w
            self.weights[tuple(dst)] += w

    def pop(self, end: int) -> tuple[int, np.ndarray]:
        """Remove and return the finished rows before ``end``: ``(z0, (K, n, Y, X))``."""
        n = end - self.z0
        out = self.probs[:, :n]
        if self.weight is not None:  # normalise in place: these rows are never added to again
            np.divide(out, self.weights[:n], out=out)
        z0, self.z0 = self.z0, end
        self.probs, self.weights = self.probs[:, n:], self.weights[n:]
        return z0, out


def _mirrored(raw: np.ndarray, indices: Sequence[np.ndarray]) -> np.ndarray:
    """``raw[:, z, y, x]`` at the (mirrored) ``indices`` per axis: a view where no axis is
    mirrored (the indices are ``0 .. n - 1``), a copy otherwise."""
    if all(np.array_equal(i, np.arange(n)) for i, n in zip(indices, raw.shape[1:], strict=True)):
        return raw
    return raw[np.ix_(range(raw.shape[0]), *indices)]


def iter_tiled_predictions(
    read_region: Callable[[Box], np.ndarray],
    volume_shape: Sequence[int],
    plan: TilePlan,
    run_batch: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 4,
    blend_mode: str = "gaussian",
    progress: bool | None = None,
    region: Sequence[tuple[int, int]] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Predict a volume (or one region of it) tile by tile and yield finished z-slabs in order.

    Args:
        read_region: ``(z, y, x) slices -> (C, *box)`` float32 input (normalised), inside the
            volume.
        volume_shape: ``(Z, Y, X)``.
        plan: from :func:`plan_tiles`, for the whole volume.
        run_batch: ``(B, C, *in_sizes) -> (B, K, *out_sizes)`` probabilities, sizes in ``(Z, Y, X)``
            order (see :class:`unet_seg.inference.runner.ModelRunner`).
        batch_size: windows per network call.
        blend_mode: ``"gaussian"`` or ``"constant"`` importance map (sliding window only).
        progress: tqdm bar over the windows (``None``: only on a TTY).
        region: ``(start, stop)`` per axis of the output to compute (default: the whole
            volume). Only the windows touching it run, reading their input mirrored at the
            volume's edges, so a region's values equal the whole volume's there.

    Yields:
        ``(z0, probs)`` with ``probs`` ``(K, n, Y, X)`` float32 for rows ``z0 .. z0 + n - 1`` of
        the region (``Y, X``: its plane); the slabs cover its z-range exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    size = tuple(int(s) for s in volume_shape)
    region = tuple((0, s) for s in size) if region is None else tuple(map(tuple, region))
    if any(not 0 <= a < b <= s for (a, b), s in zip(region, size, strict=True)):
        raise ValueError(f"region {region} is empty or outside the volume {size}")
    plan = restrict_plan(plan, region)
    az, ay, ax = plan.axes
    out_sizes = (az.out_size, ay.out_size, ax.out_size)
    acc = _RowAccumulator(region, importance_map(out_sizes, blend_mode) if plan.blend else None)
    y_idx, x_idx = input_indices(ay), input_indices(ax)
    plane = (slice(int(y_idx.min()), int(y_idx.max()) + 1),
             slice(int(x_idx.min()), int(x_idx.max()) + 1))  # fmt: skip
    y_idx, x_idx = y_idx - plane[0].start, x_idx - plane[1].start
    groups = _slab_groups(plan, batch_size)
    bar = tqdm(
        total=plan.num_windows, desc="tiles", unit="tile", leave=False,
        disable=None if progress is None else not progress,
    )  # fmt: skip
    try:
        for g, group in enumerate(groups):
            # One slab: the input rows of this group's windows, mirrored outside the volume.
            z_idx = reflect_index(
                np.arange(group[0] - az.lo, group[-1] - az.lo + az.in_size), size[0]
            )
            z_min, z_max = int(z_idx.min()), int(z_idx.max()) + 1
            raw = np.asarray(read_region((slice(z_min, z_max), *plane)), dtype=np.float32)
            slab = _mirrored(raw, (z_idx - z_min, y_idx, x_idx))
            del raw
            windows = [(z, y, x) for z in group for y in ay.starts for x in ax.starts]
            for b in range(0, len(windows), batch_size):
                chunk = windows[b : b + batch_size]
                tiles = [
                    slab[:, z - group[0] : z - group[0] + az.in_size,
                         y - ay.starts[0] : y - ay.starts[0] + ay.in_size,
                         x - ax.starts[0] : x - ax.starts[0] + ax.in_size]
                    for z, y, x in chunk
                ]  # fmt: skip
                probs = run_batch(np.stack(tiles))
                acc.grow(probs.shape[1], min(group[-1] + az.out_size, region[0][1]))
                for start, p in zip(chunk, probs, strict=True):
                    acc.add(start, p)
                bar.update(len(chunk))
            # Rows before the next group's first window are final.
            end = groups[g + 1][0] if g + 1 < len(groups) else region[0][1]
            end = min(max(end, region[0][0]), region[0][1])
            if end > acc.z0:
                yield acc.pop(end)
    finally:
        bar.close()


def predict_tiled(
    image: np.ndarray,
    model,
    run_batch: Callable[[np.ndarray], np.ndarray],
    tile_size: int | Sequence[int],
    overlap: float = 0.25,
    batch_size: int = 4,
    blend_mode: str = "gaussian",
) -> np.ndarray:
    """In-memory convenience: ``(C, Z, Y, X)`` float32 image -> ``(K, Z, Y, X)`` probabilities."""
    if image.ndim != 4:
        raise ValueError(f"expected a (C, Z, Y, X) image, got shape {image.shape}")
    shape = image.shape[1:]
    plan = plan_tiles(model, shape, tile_size, overlap)
    read = lambda box: image[(slice(None), *box)]  # noqa: E731
    slabs = iter_tiled_predictions(read, shape, plan, run_batch, batch_size, blend_mode, False)
    return np.concatenate([p for _, p in slabs], axis=1)
