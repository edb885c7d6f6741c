"""Running a tile plan over a volume, one z-slab at a time.

Stages (as in MONAI's ``sliding_window_inference``): for each slab of z-rows: read the rows the
windows need (mirrored outside the volume) -> batched windows -> model -> accumulate (overwrite
for overlap-tile, weighted sums for a blended sliding window) -> normalise the rows no later
window touches -> yield them. Only one slab of input and output is held at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from unet_seg.data.patches import reflect_index
from unet_seg.inference.tiling import TilePlan, importance_map, plan_tiles


def _slab_groups(plan: TilePlan, batch_size: int) -> list[tuple[int, ...]]:
    """z-window starts grouped so that one group fills about one batch (memory: one slab)."""
    z_starts = plan.axes[0].starts
    per_row = math.prod(len(a.starts) for a in plan.axes[1:])
    rows = max(1, math.ceil(batch_size / per_row))
    return [z_starts[i : i + rows] for i in range(0, len(z_starts), rows)]


class _RowAccumulator:
    """Output rows ``[z0, z0 + rows)`` of the volume still being written: ``(K, rows, Y, X)``
    probabilities (weighted sums when blending) and ``(rows, Y, X)`` weight sums."""

    def __init__(self, plane: tuple[int, int], weight: np.ndarray | None) -> None:
        self.plane, self.weight, self.z0 = plane, weight, 0
        self.probs: np.ndarray | None = None
        self.weights = np.zeros((0, *plane), np.float32)

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

    def add(self, start: tuple[int, int, int], probs: np.ndarray, limit: Sequence[int]) -> None:
        """Put one window's ``(K, *out)`` probabilities at ``start`` (z, y, x), cropped."""
        n = [min(o, lim - s) for o, s, lim in zip(probs.shape[1:], start, limit, strict=True)]
        z, y, x = start
        region = (slice(z - self.z0, z - self.z0 + n[0]), slice(y, y + n[1]), slice(x, x + n[2]))
        p = probs[:, : n[0], : n[1], : n[2]]
        if self.weight is None:  # overlap-tile: a later tile overwrites the duplicate region
            self.probs[(slice(None), *region)] = p
        else:
            w = self.weight[: n[0], : n[1], : n[2]]
            self.probs[(slice(None), *region)] += p * w
            self.weights[region] += w

    def pop(self, end: int) -> tuple[int, np.ndarray]:
        """Remove and return the finished rows before ``end``: ``(z0, (K, n, Y, X))``."""
        n = end - self.z0
        out = self.probs[:, :n]
        out = np.array(out if self.weight is None else out / self.weights[:n], dtype=np.float32)
        z0, self.z0 = self.z0, end
        self.probs, self.weights = self.probs[:, n:], self.weights[n:]
        return z0, out


def iter_tiled_predictions(
    read_slab: Callable[[int, int], np.ndarray],
    volume_shape: Sequence[int],
    plan: TilePlan,
    run_batch: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 4,
    blend_mode: str = "gaussian",
    progress: bool | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Predict a volume tile by tile and yield finished z-slabs in order.

    Args:
        read_slab: ``(z0, z1) -> (C, z1 - z0, Y, X)`` float32 input rows (normalised).
        volume_shape: ``(Z, Y, X)``.
        plan: from :func:`plan_tiles`.
        run_batch: ``(B, C, *in_sizes) -> (B, K, *out_sizes)`` probabilities, sizes in ``(Z, Y, X)``
            order (see :class:`unet_seg.inference.runner.ModelRunner`).
        batch_size: windows per network call.
        blend_mode: ``"gaussian"`` or ``"constant"`` importance map (sliding window only).
        progress: tqdm bar over the windows (``None``: only on a TTY).

    Yields:
        ``(z0, probs)`` with ``probs`` ``(K, n, Y, X)`` float32 for rows ``z0 .. z0 + n - 1``; the
        slabs cover ``[0, Z)`` exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    az, ay, ax = plan.axes
    size = tuple(int(s) for s in volume_shape)
    out_sizes = (az.out_size, ay.out_size, ax.out_size)
    acc = _RowAccumulator(size[1:], importance_map(out_sizes, blend_mode) if plan.blend else None)
    y_idx = reflect_index(np.arange(-ay.lo, ay.starts[-1] - ay.lo + ay.in_size), size[1])
    x_idx = reflect_index(np.arange(-ax.lo, ax.starts[-1] - ax.lo + ax.in_size), size[2])
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
            raw = np.asarray(read_slab(z_min, z_max), dtype=np.float32)
            slab = raw[np.ix_(range(raw.shape[0]), z_idx - z_min, y_idx, x_idx)]
            del raw
            windows = [(z, y, x) for z in group for y in ay.starts for x in ax.starts]
            for b in range(0, len(windows), batch_size):
                chunk = windows[b : b + batch_size]
                tiles = [
                    slab[:, z - group[0] : z - group[0] + az.in_size,
                         y : y + ay.in_size, x : x + ax.in_size]
                    for z, y, x in chunk
                ]  # fmt: skip
                probs = run_batch(np.stack(tiles))
                acc.grow(probs.shape[1], min(group[-1] + az.out_size, size[0]))
                for start, p in zip(chunk, probs, strict=True):
                    acc.add(start, p, size)
                bar.update(len(chunk))
            # Rows before the next group's first window are final.
            yield acc.pop(groups[g + 1][0] if g + 1 < len(groups) else size[0])
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
    slabs = iter_tiled_predictions(
        lambda z0, z1: image[:, z0:z1], shape, plan, run_batch, batch_size, blend_mode, False
    )
    return np.concatenate([p for _, p in slabs], axis=1)
