"""Elastic deformation on a coarse grid of control points (Ronneberger et al. 2015, Sec. 3.1).

Two backends give the same deformation for the same control-point displacements:

- ``"elasticdeform"``: the reference, ``elasticdeform.deform_grid`` (C, one CPU thread).
- ``"torch"``: the dense displacement is upsampled from the control points with exactly the
  interpolation elasticdeform uses (control points spread evenly from the first to the last voxel,
  cubic B-spline through them with mirror boundaries), computed separably as one small matrix per
  axis; then the arrays are resampled with ``torch.nn.functional.grid_sample`` (CPU or GPU,
  batched).
  Order 3 is an exact cubic B-spline (prefilter + 2**D linear lookups, the "fast cubic texture
  filtering" identity), order 1 is linear, order 0 nearest; borders are mirrored as in scipy.
  In 3D on CPU, where grid_sample's 3D kernel is scalar, all orders go through
  ``unet_seg.data.sampling3d`` instead (2D lookups on z-sorted voxels; a gather for order 0),
  same values.
  The only known difference: exact half-way ties in order 0 round half-to-even in torch and
  half-up in elasticdeform (measure zero for random displacements).

Displacements are in voxels and say where each output voxel samples the input:
``out[y] = in(A^-1 y + u(y))`` with ``u`` the interpolated displacement and ``A`` the optional
output affine (elasticdeform's convention, shape ``(D, D + 1)``).

Longer than our ~300-line rule on purpose: the interpolation weights, the prefilter and the
cubic sampling must match elasticdeform's exactly, and reading them side by side is what keeps
them in step.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from contextlib import nullcontext
from functools import lru_cache

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

from unet_seg.data.patches import reflect_index
from unet_seg.data.sampling3d import (
    one_thread,
    sample_cubic_3d,
    sample_linear_3d,
    sample_nearest,
    sort_voxels,
)

SUPPORTED_ORDERS = (0, 1, 3)
# align_corners=True puts -1/1 on the first/last voxel centre, so "reflection" is scipy's mirror.
_GRID_KWARGS = {"padding_mode": "reflection", "align_corners": True}


@lru_cache(maxsize=64)
def control_point_weights(size: int, points: int) -> np.ndarray:
    """Matrix ``(size, points)`` mapping control-point values to the value at every voxel.

    Matches elasticdeform: control point ``k`` sits at voxel ``k * (size - 1) / (points - 1)``,
    the values are spline-prefiltered (mirror) and interpolated with a cubic B-spline whose taps
    beyond the ends are mirrored.
    """
    if size < 2 or points < 1:
        raise ValueError(f"need size >= 2 and points >= 1, got size={size}, points={points}")
    prefilter = scipy.ndimage.spline_filter1d(np.eye(points), order=3, axis=0, mode="mirror")
    position = (points - 1) * np.arange(size, dtype=np.float64) / (size - 1)
    start = np.floor(position).astype(np.int64) - 1
    t = position - np.floor(position)
    taps = np.stack(_cubic_bspline_weights(t), axis=1)  # (size, 4)
    interp = np.zeros((size, points))
    for tap in range(4):
        index = reflect_index(start + tap, points)
        np.add.at(interp, (np.arange(size), index), taps[:, tap])
    return interp @ prefilter


@lru_cache(maxsize=32)
def _spline_prefilter_matrix(size: int) -> np.ndarray:
    """Matrix ``(size, size)``: cubic B-spline coefficients of a mirror-extended signal."""
    return scipy.ndimage.spline_filter1d(np.eye(size), order=3, axis=0, mode="mirror")


def _cubic_bspline_weights(t):
    """Weights of the taps at floor(x) - 1 ... floor(x) + 2 for fractional part ``t``."""
    w0 = (1 - t) ** 3 / 6
    w1 = (3 * t**3 - 6 * t**2 + 4) / 6
    w3 = t**3 / 6
    return w0, w1, 1 - w0 - w1 - w3, w3


def dense_displacement(displacement: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Upsample control-point displacements ``(N, D, *points)`` to ``(N, D, *shape)`` voxels.

    Separable: one ``(size, points)`` matrix per axis, so the cost is a few small matmuls.
    """
    _check_displacement(displacement, shape)
    dense = displacement
    for axis, size in enumerate(shape):
        dense = _upsample_axis(dense, axis + 2, int(size))
    return dense


def _prefilter(x: torch.Tensor, dense: bool | None = None) -> torch.Tensor:
    """Cubic B-spline coefficients of ``x`` ``(N, C, *spatial)`` along all spatial axes (mirror).

    On CPU scipy's recursive filter is ~10x faster than the ``dense`` matrix, which serves GPUs.
    """
    if not (x.device.type != "cpu" if dense is None else dense):
        out = x.numpy().copy()
        for axis in range(2, x.ndim):
            scipy.ndimage.spline_filter1d(out, order=3, axis=axis, mode="mirror", output=out)
        return torch.from_numpy(out)
    letters = "abcdefgh"[: x.ndim]
    for axis in range(2, x.ndim):
        matrix = _spline_prefilter_matrix(int(x.shape[axis]))
        matrix = torch.as_tensor(matrix, dtype=x.dtype, device=x.device)
        out_letters = letters.replace(letters[axis], "z")
        x = torch.einsum(f"{letters},z{letters[axis]}->{out_letters}", x, matrix)
    return x


def _inverse_affine(affine: np.ndarray | None, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A^-1, -A^-1 t)`` of an output affine ``(D, D + 1)``; identity when None."""
    if affine is None:
        return np.eye(dims), np.zeros(dims)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (dims, dims + 1):
        raise ValueError(f"affine must have shape ({dims}, {dims + 1}), got {affine.shape}")
    inverse = np.linalg.inv(affine[:, :dims])
    return inverse, -inverse @ affine[:, dims]


def sampling_grid(
    displacement: torch.Tensor, shape: Sequence[int], affine: np.ndarray | None = None
) -> torch.Tensor:
    """grid_sample grid ``(N, *shape, D)`` (x first, in [-1, 1]) for ``A^-1 y + u(y)``.

    Same field as ``deformation_coords`` but built for speed: everything except the last axis
    is done on the small ``(N, D, *shape[:-1], points)`` tensor (the affine/identity part and
    the normalisation to [-1, 1] ride along because the interpolation weights sum to 1), and
    one broadcast matmul with ``[weights | ramp]`` writes the full grid in its final layout.
    """
    _check_displacement(displacement, shape)
    dims, last = len(shape), len(shape) - 1
    inverse, offset = _inverse_affine(affine, dims)
    small = displacement
    for axis in range(last):
        small = _upsample_axis(small, axis + 2, int(shape[axis]))
    kw = {"dtype": small.dtype, "device": small.device}
    ramps = [
        torch.arange(size, **kw).view(*[1] * axis, size, *[1] * (dims - axis - 1))
        for axis, size in enumerate(shape[:last])
    ]  # each broadcasts over (*shape[:-1], 1)
    scale = [2.0 / (size - 1) for size in shape]
    columns = []
    for c in reversed(range(dims)):  # grid_sample wants (x, y[, z])
        linear = float(offset[c])
        for b, ramp in enumerate(ramps):
            linear = linear + float(inverse[c, b]) * ramp
        part = (small[:, c] + linear) * scale[c] - 1.0
        ramp_coef = torch.full_like(part[..., :1], float(inverse[c, last]) * scale[c])
        columns.append(torch.cat([part, ramp_coef], dim=-1))
    stacked = torch.stack(columns, dim=-1)  # (N, *shape[:-1], points + 1, D)
    weights = control_point_weights(int(shape[last]), int(displacement.shape[-1]))
    ramp = np.arange(shape[last], dtype=np.float64)[:, None]
    matrix = torch.as_tensor(np.concatenate([weights, ramp], axis=1), **kw)
    return matrix @ stacked


def _upsample_axis(x: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    weights = control_point_weights(size, int(x.shape[axis]))
    matrix = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    return torch.movedim(torch.movedim(x, axis, -1) @ matrix.T, -1, axis)


def _check_displacement(displacement: torch.Tensor, shape: Sequence[int]) -> None:
    if displacement.ndim != len(shape) + 2 or displacement.shape[1] != len(shape):
        raise ValueError(
            f"displacement must have shape (N, {len(shape)}, *points), "
            f"got {tuple(displacement.shape)}"
        )


def warp(
    tensors: Sequence[torch.Tensor],
    displacement: torch.Tensor,
    orders: Sequence[int],
    affine: np.ndarray | None = None,
) -> list[torch.Tensor]:
    """Deform each ``(N, C_i, *spatial)`` tensor by control-point displacements
    ``(N, D, *points)`` (voxels; sample ``n`` gets its own), with an optional output affine.

    Mirror boundaries; ``order`` 0 (nearest), 1 (linear) or 3 (cubic B-spline, exact). Tensors
    with the same order are sampled together; orders 0 and 1 share one grid (3D on CPU: all
    orders share the voxel coordinates).
    """
    if len(tensors) != len(orders):
        raise ValueError(f"got {len(orders)} interpolation orders for {len(tensors)} tensors")
    bad = [o for o in orders if o not in SUPPORTED_ORDERS]
    if bad:
        raise ValueError(f"torch backend supports orders {SUPPORTED_ORDERS}, got {bad}")
    shape = tensors[0].shape[2:]
    # 3D grid_sample is scalar on CPU: there every order reads voxel coordinates instead
    gather_3d = len(shape) == 3 and tensors[0].device.type == "cpu"
    with one_thread() if gather_3d else nullcontext():
        return _warp_orders(tensors, displacement, orders, affine, gather_3d)


def _warp_orders(tensors, displacement, orders, affine, gather_3d: bool) -> list[torch.Tensor]:
    shape = tensors[0].shape[2:]
    outputs: list[torch.Tensor | None] = [None] * len(tensors)
    grid = coords = voxels = None
    for order in sorted(set(orders)):
        members = [i for i, o in enumerate(orders) if o == order]
        parts = [tensors[i] for i in members]
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if order == 3 or gather_3d:
            coords = deformation_coords(displacement, shape, affine) if coords is None else coords
        if gather_3d and order > 0 and voxels is None:
            voxels = sort_voxels(coords, shape)  # one fold and sort for orders 1 and 3
        if order == 3 and gather_3d:
            out = sample_cubic_3d(_prefilter(x), voxels)
        elif order == 3:
            out = _sample_cubic(_prefilter(x), coords, shape)
        elif gather_3d:
            out = sample_nearest(x, coords) if order == 0 else sample_linear_3d(x, voxels)
        else:
            grid = sampling_grid(displacement, shape, affine) if grid is None else grid
            mode = "nearest" if order == 0 else "bilinear"
            out = F.grid_sample(x, grid, mode=mode, **_GRID_KWARGS)
        sizes = [p.shape[1] for p in parts]
        for i, part in zip(members, out.split(sizes, 1), strict=True):
            outputs[i] = part
    return outputs


def _sample_cubic(x: torch.Tensor, coords: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Cubic B-spline of coefficients ``x`` ``(N, C, *spatial)`` at ``coords`` ``(N, D, *out)``.

    A cubic B-spline is a sum of 2**D linear lookups: per axis the taps (i-1, i) and (i+1, i+2)
    are each merged into one linear sample at a shifted point, with weight g0 or g1 = 1 - g0.
    In-place ops keep the temporaries few: at ~1M voxels allocation dominates the arithmetic.
    """
    pairs = []
    for axis, size in enumerate(shape):
        c = coords[:, axis]
        floor = torch.floor(c)
        t = c - floor
        t2 = t * t
        w1 = (t * 3).sub_(6).mul_(t2).div_(6).add_(2 / 3)
        g0 = torch.rsub(t, 1).pow_(3).div_(6).add_(w1)
        g1 = torch.rsub(g0, 1)
        scale = 2.0 / (size - 1)  # voxel -> grid_sample's [-1, 1]
        floor.sub_(1).mul_(scale).sub_(1)  # grid position of tap i - 1
        h0 = w1.div_(g0).mul_(scale).add_(floor)
        h1 = t2.mul_(t).div_(g1 * 6).add_(2).mul_(scale).add_(floor)
        pairs.append(((h0, g0), (h1, g1)))
    out = None
    grid = coords.new_empty((coords.shape[0], *coords.shape[2:], len(shape)))
    for combo in itertools.product(*pairs):
        weight = combo[0][1]
        for _, g in combo[1:]:
            weight = weight * g
        for axis, (h, _) in enumerate(combo):
            grid[..., len(shape) - 1 - axis].copy_(h)  # grid_sample wants (x, y[, z])
        term = F.grid_sample(x, grid, mode="bilinear", **_GRID_KWARGS).mul_(weight.unsqueeze(1))
        out = term if out is None else out.add_(term)
    return out


def deformation_coords(
    displacement: torch.Tensor, shape: Sequence[int], affine: np.ndarray | None = None
) -> torch.Tensor:
    """Sampling coordinates ``(N, D, *shape)`` = ``A^-1 y + u(y)`` for every output voxel ``y``.

    ``displacement`` ``(N, D, *points)`` in voxels; ``affine`` ``(D, D + 1)`` or None.
    """
    dims = len(shape)
    coords = dense_displacement(displacement, shape)
    inverse, offset = _inverse_affine(affine, dims)
    kw = {"dtype": coords.dtype, "device": coords.device}
    ramps = [
        torch.arange(s, **kw).view(*[1] * axis, s, *[1] * (dims - axis - 1))
        for axis, s in enumerate(shape)
    ]
    for c in range(dims):
        coords[:, c] += float(offset[c])
        for b in range(dims):
            if inverse[c, b] != 0.0:
                coords[:, c] += float(inverse[c, b]) * ramps[b]
    return coords


def deform_grid_torch(
    arrays: Sequence[np.ndarray],
    displacement: np.ndarray,
    orders: Sequence[int] = (3, 0),
    axes: Sequence[int] | None = None,
    affine: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """Torch counterpart of ``elasticdeform.deform_grid`` for one sample.

    Args:
        arrays: arrays that share their trailing spatial shape ``(*spatial)``; leading extra axes
            (e.g. channels ``(C, *spatial)``) are carried along undeformed.
        displacement: ``(len(axes), *points)`` control-point displacements in voxels.
        orders: interpolation order per array (0, 1 or 3).
        axes: spatial axes to deform (indices into ``spatial``); default all. Axes left out
            (e.g. z of an anisotropic stack) get the same in-plane deformation for every slice.
        affine: optional ``(len(axes), len(axes) + 1)`` output affine, as in elasticdeform.

    Returns:
        deformed arrays, same shapes and dtypes as the inputs.
    """
    spatial_ndim, axes = check_arrays(arrays, orders, axes)
    # 3D on CPU: one torch thread throughout, conversions included (see sampling3d.one_thread)
    with one_thread() if len(axes) == 3 and torch.device(device).type == "cpu" else nullcontext():
        return _deform_grid_torch(arrays, displacement, orders, axes, affine, device, spatial_ndim)


def _deform_grid_torch(arrays, displacement, orders, axes, affine, device, spatial_ndim):
    shape = arrays[0].shape[arrays[0].ndim - spatial_ndim :]
    deformed_shape = [shape[a] for a in axes]
    disp = torch.as_tensor(np.asarray(displacement), dtype=torch.float32, device=device)
    if disp.shape[0] != len(axes):
        raise ValueError(f"displacement has {disp.shape[0]} components for {len(axes)} axes")
    tensors, layouts = [], []
    for array in arrays:
        moved_axes = [array.ndim - spatial_ndim + a for a in axes]
        moved = np.moveaxis(array, moved_axes, list(range(-len(axes), 0)))
        x = torch.as_tensor(np.ascontiguousarray(moved), dtype=torch.float32, device=device)
        tensors.append(x.reshape(1, -1, *deformed_shape))
        layouts.append((moved.shape, moved_axes))
    outputs = []
    warped = warp(tensors, disp.unsqueeze(0), orders, affine)
    for array, out, (moved_shape, moved_axes) in zip(arrays, warped, layouts, strict=True):
        out = out.reshape(moved_shape).cpu().numpy()
        if not np.issubdtype(array.dtype, np.floating):
            out = np.rint(out)
        outputs.append(np.moveaxis(out, list(range(-len(axes), 0)), moved_axes).astype(array.dtype))
    return outputs


def check_arrays(
    arrays: Sequence[np.ndarray], orders: Sequence[int], axes: Sequence[int] | None
) -> tuple[int, tuple[int, ...]]:
    """Validate inputs; return the spatial ndim (that of the smallest array) and the axes."""
    if len(arrays) == 0:
        raise ValueError("elastic deformation needs at least one array")
    if len(orders) != len(arrays):
        raise ValueError(f"got {len(orders)} interpolation orders for {len(arrays)} arrays")
    spatial_ndim = min(a.ndim for a in arrays)
    shape = arrays[0].shape[arrays[0].ndim - spatial_ndim :]
    for a in arrays:
        if a.shape[a.ndim - spatial_ndim :] != shape:
            raise ValueError(f"arrays must share the spatial shape {shape}, got {a.shape}")
    axes = tuple(range(spatial_ndim)) if axes is None else tuple(int(a) for a in axes)
    if not axes or list(axes) != sorted(set(axes)) or not all(0 <= a < spatial_ndim for a in axes):
        raise ValueError(f"axes must be sorted, unique spatial axes < {spatial_ndim}, got {axes}")
    if any(shape[a] < 2 for a in axes):
        raise ValueError(f"deformed axes need at least 2 voxels, spatial shape is {shape}")
    return spatial_ndim, axes
