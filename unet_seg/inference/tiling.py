"""Tiled prediction of volumes larger than one network input, streamed slab by slab along z.

Two strategies, chosen by the network's margin ``(input - output) / 2``:

- **Overlap-tile** (valid-padding networks, Ronneberger et al. 2015, Fig. 2): the volume is
  mirror-extended by the margin, output tiles abut exactly and need no blending. The last tile
  along an axis is flush with the edge; where it overlaps its neighbour the later tile wins
  everywhere, so the duplicate region is written consistently.
- **Sliding window** (same-padding networks, margin 0): windows overlap by ``overlap`` and are
  blended with a Gaussian or constant importance map, normalised by the accumulated weights.

Stages (as in MONAI's ``sliding_window_inference``): plan the tile sizes and window starts ->
importance map -> for each slab of z-rows: read (mirror indices) -> batched windows -> accumulate
-> normalise the rows no later window touches -> yield them. Volumes are ``(C, Z, Y, X)``; a 2D
network sees windows one slice thick (a 2D image is a one-slice volume), so slices and tiles
are batched together. Only one slab of input and output is held at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

BLEND_MODES = ("gaussian", "constant")
_MAX_SIZE_SEARCH = 4096  # no network input needs to grow further than this to become valid


@dataclass(frozen=True)
class AxisPlan:
    """Tiling along one volume axis (output coordinates).

    ``in_size`` voxels go into the network, ``out_size`` come out; the window whose output starts
    at ``s`` reads input ``[s - lo, s - lo + in_size)`` (mirrored outside the volume).
    """

    size: int
    in_size: int
    out_size: int
    lo: int
    starts: tuple[int, ...]


@dataclass(frozen=True)
class TilePlan:
    """Tiling of a ``(Z, Y, X)`` volume; ``blend`` when output windows overlap (sliding window)."""

    axes: tuple[AxisPlan, AxisPlan, AxisPlan]
    blend: bool

    @property
    def num_windows(self) -> int:
        return math.prod(len(a.starts) for a in self.axes)


def reflect_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices ``start..stop-1`` mirrored into ``[0, size)`` without repeating the edge voxel
    (numpy's ``reflect`` mode), repeatedly for ranges far outside: ``(stop - start,)`` int64."""
    idx = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(idx)
    idx = np.mod(idx, 2 * (size - 1))
    return np.where(idx >= size, 2 * (size - 1) - idx, idx)


def _fits(model: Callable, shape: Sequence[int]) -> bool:
    try:
        model.output_shape(tuple(shape))
    except ValueError:
        return False
    return True


def valid_input_sizes(model, min_sizes: Sequence[int]) -> tuple[int, ...]:
    """Smallest input sizes ``>= min_sizes`` (per axis) that ``model.output_shape`` accepts."""
    nd = len(min_sizes)
    ref = max(min_sizes)
    while not _fits(model, (ref,) * nd):
        ref += 1
        if ref > max(min_sizes) + _MAX_SIZE_SEARCH:
            raise ValueError(f"no valid network input size found above {tuple(min_sizes)}")
    sizes = []
    for axis, size in enumerate(min_sizes):
        shape = [ref] * nd
        shape[axis] = max(int(size), 1)
        while not _fits(model, shape):
            shape[axis] += 1
        sizes.append(shape[axis])
    return tuple(sizes)


def _period(model, in_sizes: Sequence[int], axis: int) -> int:
    """Spacing of valid input sizes along ``axis`` (``2 ** pooled levels`` for a U-Net)."""
    bigger = list(in_sizes)
    bigger[axis] += 1
    return valid_input_sizes(model, bigger)[axis] - in_sizes[axis]


def _starts(size: int, out_size: int, step: int, period: int) -> tuple[int, ...]:
    """Output window starts covering ``[0, size)``.

    A U-Net is shift-equivariant only for shifts by multiples of its pooling ``period``, so steps
    that are such multiples make tiled and untiled predictions equal. The last window is moved to
    the first multiple of ``period`` at or after ``size - out_size``: flush with the edge, or
    reaching at most ``period - 1`` voxels into the mirrored border.
    """
    if size <= out_size:
        return (0,)
    starts = list(range(0, size - out_size, step))
    last = size - out_size
    if step % period == 0:
        last = -(-last // period) * period
    return (*starts, last)


def _spread_starts(size: int, out_size: int, max_step: int) -> tuple[int, ...]:
    """Sliding-window starts: the fewest windows whose steps stay within ``max_step``, spread
    evenly from 0 to flush with the edge (a fixed step would leave a last window that mostly
    repeats its neighbour)."""
    if size <= out_size:
        return (0,)
    count = -(-(size - out_size) // max_step) + 1
    return tuple(round(i * (size - out_size) / (count - 1)) for i in range(count))


def plan_tiles(
    model,
    volume_shape: Sequence[int],
    tile_size: int | Sequence[int],
    overlap: float = 0.25,
) -> TilePlan:
    """Plan the tiles of a ``(Z, Y, X)`` volume for ``model`` (2D or 3D, see module docstring).

    Args:
        model: has ``spatial_dims`` and ``output_shape(spatial) -> spatial`` (e.g. ``UNet``).
        volume_shape: ``(Z, Y, X)``; a 2D image is ``(1, Y, X)``.
        tile_size: output region per window, per network axis (int: all axes). Valid networks
            read this plus their margin, rounded up to a size they accept; smaller volumes get
            smaller tiles.
        overlap: fraction of a window shared with its neighbour, same-padding networks only.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    dims = int(model.spatial_dims)
    if len(volume_shape) != 3 or min(volume_shape) < 1:
        raise ValueError(f"volume shape must be (Z, Y, X) with positive sizes, got {volume_shape}")
    net_shape = tuple(int(s) for s in volume_shape[3 - dims :])
    tiles = (tile_size,) * dims if isinstance(tile_size, int) else tuple(tile_size)
    if len(tiles) != dims or min(tiles) < 1:
        raise ValueError(f"tile_size needs {dims} positive sizes, got {tile_size}")
    wanted = tuple(min(int(t), s) for t, s in zip(tiles, net_shape, strict=True))
    probe = valid_input_sizes(model, wanted)
    margins = tuple(i - o for i, o in zip(probe, model.output_shape(probe), strict=True))
    in_sizes = valid_input_sizes(model, [w + m for w, m in zip(wanted, margins, strict=True)])
    out_sizes = model.output_shape(in_sizes)
    blend = overlap > 0 and not any(margins)
    axes = [AxisPlan(int(volume_shape[0]), 1, 1, 0, tuple(range(volume_shape[0])))] * (3 - dims)
    for axis, (size, t_in, t_out) in enumerate(zip(net_shape, in_sizes, out_sizes, strict=True)):
        period = _period(model, in_sizes, axis)
        # Overlap-tile abuts output tiles; a sliding window steps by (1 - overlap) of a window.
        # Both round the step down to a multiple of the period where the window allows it.
        step = max(1, round(t_out * (1 - overlap))) if blend else t_out
        step = step - step % period if step >= period else step
        starts = _spread_starts(size, t_out, step) if blend else _starts(size, t_out, step, period)
        axes.append(AxisPlan(size, t_in, t_out, (t_in - t_out) // 2, starts))
    return TilePlan(tuple(axes), blend)


def importance_map(shape: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125):
    """Blending weights of one output window, ``(*shape)`` float32, maximum 1.

    Gaussian: ``sigma = sigma_scale * size`` per axis (MONAI's default), floored at 1e-4 so that
    every voxel keeps a weight; axes of size 1 (2D windows of a stack) are constant.
    """
    if mode not in BLEND_MODES:
        raise ValueError(f"blend mode must be one of {BLEND_MODES}, got {mode!r}")
    weights = np.ones(tuple(shape), dtype=np.float32)
    if mode == "constant":
        return weights
    for axis, size in enumerate(shape):
        if size > 1:
            coord = np.arange(size, dtype=np.float64) - (size - 1) / 2
            profile = np.exp(-0.5 * (coord / (sigma_scale * size)) ** 2).astype(np.float32)
            weights *= profile.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return np.maximum(weights / weights.max(), 1e-4)


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
    y_idx = reflect_indices(-ay.lo, ay.starts[-1] - ay.lo + ay.in_size, size[1])
    x_idx = reflect_indices(-ax.lo, ax.starts[-1] - ax.lo + ax.in_size, size[2])
    groups = _slab_groups(plan, batch_size)
    bar = tqdm(
        total=plan.num_windows, desc="tiles", unit="tile", leave=False,
        disable=None if progress is None else not progress,
    )  # fmt: skip
    try:
        for g, group in enumerate(groups):
            # One slab: the input rows of this group's windows, mirrored outside the volume.
            z_idx = reflect_indices(group[0] - az.lo, group[-1] - az.lo + az.in_size, size[0])
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
