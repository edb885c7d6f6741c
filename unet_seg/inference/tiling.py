"""Planning the tiles of volumes larger than one network input.

Two strategies, chosen by the network's margin ``(input - output) / 2``:

- **Overlap-tile** (valid-padding networks, Ronneberger et al. 2015, Fig. 2): the volume is
  mirror-extended by the margin, output tiles abut and need no blending. Steps are multiples of
  the pooling period, so tiles equal one untiled pass. The last tile is flush with the edge;
  where it overlaps its neighbour the later tile wins everywhere (a consistent duplicate region).
- **Sliding window** (same-padding networks, margin 0): windows overlap by ``overlap`` and are
  blended with a Gaussian or constant importance map, normalised by the accumulated weights.

This module plans the tiles (sizes, margins, window starts) and the importance map;
:mod:`unet_seg.inference.stream` runs them slab by slab. Volumes are ``(Z, Y, X)``; a 2D network
sees windows one slice thick (a 2D image is a one-slice volume), so slices and tiles are batched
together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unet_seg.models.protocol import SegmentationNetwork

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


def _fits(model: SegmentationNetwork, shape: Sequence[int]) -> bool:
    try:
        model.output_shape(tuple(shape))
    except ValueError:
        return False
    return True


def valid_input_sizes(model: SegmentationNetwork, min_sizes: Sequence[int]) -> tuple[int, ...]:
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


def _period(model: SegmentationNetwork, in_sizes: Sequence[int], axis: int) -> int:
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
    model: SegmentationNetwork,
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
    if blend:
        in_sizes = out_sizes = _fitted_windows(model, net_shape, in_sizes, overlap)
    axes = [AxisPlan(int(volume_shape[0]), 1, 1, 0, tuple(range(volume_shape[0])))] * (3 - dims)
    for axis, (size, t_in, t_out) in enumerate(zip(net_shape, in_sizes, out_sizes, strict=True)):
        period = _period(model, in_sizes, axis)
        # Overlap-tile abuts output tiles; a sliding window steps by (1 - overlap) of a window.
        # Both round the step down to a multiple of the period where the window allows it.
        step = _blend_step(t_out, overlap, period) if blend else _down_to(t_out, period)
        starts = _spread_starts(size, t_out, step) if blend else _starts(size, t_out, step, period)
        axes.append(AxisPlan(size, t_in, t_out, (t_in - t_out) // 2, starts))
    return TilePlan(tuple(axes), blend)


def _down_to(step: int, period: int) -> int:
    """``step`` rounded down to a multiple of ``period`` where it is at least one period."""
    return step - step % period if step >= period else step


def _blend_step(window: int, overlap: float, period: int) -> int:
    """A sliding window's step: ``(1 - overlap)`` of it, down to a multiple of ``period``."""
    return _down_to(max(1, round(window * (1 - overlap))), period)


def _window_count(size: int, window: int, step: int) -> int:
    return 1 if size <= window else -(-(size - window) // step) + 1


def _fitted_windows(
    model: SegmentationNetwork, shape: Sequence[int], windows: Sequence[int], overlap: float
) -> tuple[int, ...]:
    """Same-padding windows shrunk, per axis, to the smallest valid size that needs no more
    windows than ``windows`` to cover ``shape``: less computed and less memory for the same
    window count, with at least the asked overlap. (A 256-voxel axis takes 4 windows of 96
    or of 80; 80 computes a third less.)"""
    sizes = list(windows)
    for axis, size in enumerate(shape):
        period = _period(model, sizes, axis)
        count = _window_count(size, sizes[axis], _blend_step(sizes[axis], overlap, period))
        while sizes[axis] > period:
            smaller = [*sizes[:axis], sizes[axis] - period, *sizes[axis + 1 :]]
            step = _blend_step(smaller[axis], overlap, period)
            if not _fits(model, smaller) or _window_count(size, smaller[axis], step) > count:
                break
            sizes = smaller
    return tuple(sizes)


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
