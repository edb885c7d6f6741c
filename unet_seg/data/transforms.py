"""Data augmentation for ``(C, *spatial)`` images with aligned labels.

Geometry (flips, 90-degree rotations, elastic deformation with an optional small rotation and
scaling folded into the same resampling) acts with one transform on image, label (order 0) and
weight map; intensity changes touch the image only. All randomness comes from the ``rng`` passed
in, so a dataloader worker with a seeded generator reproduces its samples.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from unet_seg.data.elastic import check_arrays, deform_grid_torch

__all__ = ["Augmenter", "deform", "elastic_deform"]

BACKENDS = ("elasticdeform", "torch")
log = logging.getLogger(__name__)


def usable_backend(backend: str) -> str:
    """``backend``, or ``"torch"`` with a warning where ``elasticdeform`` does not import (its
    0.5.1 binary wheel was built for NumPy 1.x and fails under NumPy 2): the torch backend
    reproduces it. Called where the augmentation is built, in the main process, so a broken
    install never surfaces as a traceback from a data-loader worker mid-training."""
    if backend != "elasticdeform":
        return backend
    try:
        import elasticdeform  # noqa: F401
    except Exception as err:  # ImportError, or a NumPy ABI error raised while importing
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        log.warning("elasticdeform does not import (%s): augmenting with the torch backend, "
                    "which reproduces it; `pip install --no-binary elasticdeform elasticdeform` "
                    "builds it for your NumPy", reason)  # fmt: skip
        return "torch"
    return backend


def deform(
    arrays: Sequence[np.ndarray],
    displacement: np.ndarray,
    orders: Sequence[int] = (3, 0),
    axes: Sequence[int] | None = None,
    affine: np.ndarray | None = None,
    backend: str = "elasticdeform",
    device: str = "cpu",
) -> list[np.ndarray]:
    """Deform ``arrays`` with given control-point displacements ``(len(axes), *points)`` (voxels).

    ``arrays`` share their trailing spatial shape (the shape of the array with fewest axes);
    ``axes`` index it (default: all). ``affine`` ``(D, D + 1)`` is elasticdeform's output affine:
    output voxel ``y`` samples the input at ``A^-1 y + u(y)``. Mirror borders.
    """
    arrays = list(arrays)
    spatial_ndim, axes = check_arrays(arrays, orders, axes)
    if backend == "torch":
        return deform_grid_torch(arrays, displacement, orders, axes, affine, device)
    if backend != "elasticdeform":
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    import elasticdeform  # late: the torch backend must not need it

    per_array_axes = [tuple(a.ndim - spatial_ndim + ax for ax in axes) for a in arrays]
    return elasticdeform.deform_grid(
        arrays, displacement, order=list(orders), mode="mirror", axis=per_array_axes, affine=affine
    )


def elastic_deform(
    arrays: Sequence[np.ndarray],
    sigma: float = 10.0,
    points: int | Sequence[int] = 3,
    orders: Sequence[int] = (3, 0),
    rng: np.random.Generator | None = None,
    axes: Sequence[int] | None = None,
    backend: str = "elasticdeform",
    affine: np.ndarray | None = None,
    device: str = "cpu",
) -> list[np.ndarray]:
    """The paper's random elastic deformation, one displacement for all ``arrays``.

    Control-point displacements are drawn from N(0, sigma) voxels on a ``points`` grid over the
    deformed axes (the paper: sigma 10 on a 3x3 grid) from ``rng``, so both backends give the same
    deformation for the same generator state (``elasticdeform.deform_random_grid`` draws from
    NumPy's global RNG, which is not reproducible per dataloader worker).

    Args:
        arrays: e.g. ``[image (C, *spatial), label (*spatial), weight (*spatial)]``.
        orders: per array; the label must use 0 so it keeps exactly its value set.
        axes: spatial axes to deform, e.g. ``(1, 2)`` for in-plane only on a ``(z, y, x)`` stack.
        backend: ``"elasticdeform"`` (reference, C) or ``"torch"`` (same result, see
            ``unet_seg.data.elastic``).
    """
    _, axes = check_arrays(list(arrays), orders, axes)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    points = [int(points)] * len(axes) if np.isscalar(points) else [int(p) for p in points]
    if len(points) != len(axes) or min(points) < 1:
        raise ValueError(f"points must be >= 1 per deformed axis {axes}, got {points}")
    rng = np.random.default_rng() if rng is None else rng
    displacement = rng.normal(0.0, sigma, size=(len(axes), *points))
    return deform(arrays, displacement, orders, axes, affine, backend, device)


def rotation_scaling_affine(
    shape: Sequence[int], angle_deg: float, scale: float, plane: tuple[int, int]
) -> np.ndarray:
    """Output affine ``(D, D + 1)``: rotate by ``angle_deg`` in ``plane`` (two axis indices into
    ``shape``) and scale all axes of the plane by ``scale``, about the array centre."""
    dims = len(shape)
    matrix = np.eye(dims)
    a, b = plane
    theta = np.radians(angle_deg)
    matrix[np.ix_([a, b], [a, b])] = scale * np.array(
        [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    )
    center = (np.asarray(shape, dtype=np.float64) - 1) / 2
    return np.concatenate([matrix, (center - matrix @ center)[:, None]], axis=1)


def adjust_intensity(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.0,
    contrast: Sequence[float] = (1.0, 1.0),
    gamma: Sequence[float] = (1.0, 1.0),
    noise_std: float = 0.0,
) -> np.ndarray:
    """Per-channel brightness shift U(-b, b), contrast factor about the mean, gamma on the
    min-max range (values keep their range, no clipping) and Gaussian noise; ``(C, *spatial)``."""
    out = image.astype(np.float32, copy=True)
    for channel in out:
        if brightness > 0:
            channel += rng.uniform(-brightness, brightness)
        if tuple(contrast) != (1.0, 1.0):
            mean = channel.mean()
            channel[...] = (channel - mean) * rng.uniform(*contrast) + mean
        if tuple(gamma) != (1.0, 1.0):
            lo, hi = channel.min(), channel.max()
            if hi > lo:
                unit = (channel - lo) / (hi - lo)
                channel[...] = lo + (hi - lo) * unit ** rng.uniform(*gamma)
    if noise_std > 0:
        out += rng.normal(0.0, noise_std, size=out.shape).astype(np.float32)
    return out


class Augmenter:
    """Random augmentation of a sample dict, built by Hydra from ``conf/augment/``.

    ``__call__(sample, rng)`` takes and returns ``{"image": float32 (C, *spatial), "label": int64
    (*spatial), "weight": float32 (*spatial)}`` ("weight" optional). Steps, each drawn with its
    probability ``*_p``: flips of each deformed axis; a 90-degree rotation in the last plane (180
    only when that plane is not square, so shapes never change); one resampling that combines
    the elastic deformation (sigma voxels on a ``points`` grid) with a rotation by up to
    ``max_rotation`` degrees in the last plane and a scaling from ``scale_range``; then brightness,
    contrast, gamma and noise on the image. ``inplane_only`` keeps every geometric step in the
    (y, x) plane of a 3D sample, for anisotropic stacks.
    """

    def __init__(
        self,
        backend: str = "torch",
        device: str = "cpu",
        inplane_only: bool = False,
        elastic_p: float = 1.0,
        sigma: float = 10.0,
        points: int = 3,
        rotate_p: float = 0.0,
        max_rotation: float = 15.0,
        scale_p: float = 0.0,
        scale_range: Sequence[float] = (0.9, 1.1),
        flip_p: float = 0.5,
        rot90_p: float = 0.5,
        brightness_p: float = 0.0,
        brightness: float = 0.1,
        contrast_p: float = 0.0,
        contrast_range: Sequence[float] = (0.75, 1.25),
        gamma_p: float = 0.0,
        gamma_range: Sequence[float] = (0.7, 1.5),
        noise_p: float = 0.0,
        noise_std: float = 0.05,
        image_order: int = 3,
        weight_order: int = 1,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"Augmenter: backend must be one of {BACKENDS}, got {backend!r}")
        probs = {k: v for k, v in locals().items() if k.endswith("_p")}
        bad = {k: v for k, v in probs.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"Augmenter: probabilities must lie in [0, 1], got {bad}")
        if sigma < 0 or points < 1 or noise_std < 0 or brightness < 0:
            raise ValueError("Augmenter: sigma, brightness, noise_std must be >= 0, points >= 1")
        for name, pair in [("scale_range", scale_range), ("contrast_range", contrast_range)]:
            if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
                raise ValueError(f"Augmenter: {name} must be (low, high), 0 < low <= high")
        if len(gamma_range) != 2 or not 0 < gamma_range[0] <= gamma_range[1]:
            raise ValueError("Augmenter: gamma_range must be (low, high), 0 < low <= high")
        self.backend, self.device, self.inplane_only = usable_backend(backend), device, inplane_only
        self.elastic_p, self.sigma, self.points = elastic_p, sigma, points
        self.rotate_p, self.max_rotation = rotate_p, max_rotation
        self.scale_p, self.scale_range = scale_p, tuple(scale_range)
        self.flip_p, self.rot90_p = flip_p, rot90_p
        self.brightness_p, self.brightness = brightness_p, brightness
        self.contrast_p, self.contrast_range = contrast_p, tuple(contrast_range)
        self.gamma_p, self.gamma_range = gamma_p, tuple(gamma_range)
        self.noise_p, self.noise_std = noise_p, noise_std
        self.image_order, self.weight_order = image_order, weight_order

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        image, label = sample["image"], sample["label"]
        weight = sample.get("weight")
        dims = label.ndim
        if image.ndim != dims + 1 or image.shape[1:] != label.shape:
            raise ValueError(
                f"Augmenter: image must be (C, *spatial) for label {label.shape}, got {image.shape}"
            )
        if dims not in (2, 3):
            raise ValueError(f"Augmenter: 2D or 3D samples only, label has shape {label.shape}")
        axes = (1, 2) if self.inplane_only and dims == 3 else tuple(range(dims))
        arrays = [image, label] + ([] if weight is None else [weight])
        arrays = self._flip_rot90(arrays, axes, dims, rng)
        arrays = self._resample(arrays, axes, dims, rng)
        out = dict(sample)
        out["image"] = adjust_intensity(
            arrays[0],
            rng,
            brightness=self.brightness if rng.random() < self.brightness_p else 0.0,
            contrast=self.contrast_range if rng.random() < self.contrast_p else (1.0, 1.0),
            gamma=self.gamma_range if rng.random() < self.gamma_p else (1.0, 1.0),
            noise_std=self.noise_std if rng.random() < self.noise_p else 0.0,
        )
        out["label"] = np.ascontiguousarray(arrays[1], dtype=np.int64)
        if weight is not None:
            out["weight"] = np.ascontiguousarray(arrays[2], dtype=np.float32)
        return out

    def _flip_rot90(self, arrays, axes, dims, rng) -> list[np.ndarray]:
        """Exact geometry (no resampling); ``axes`` index the spatial axes."""
        for axis in axes:
            if rng.random() < self.flip_p:
                arrays = [np.flip(a, a.ndim - dims + axis) for a in arrays]
        if rng.random() < self.rot90_p:
            first, second = axes[-2], axes[-1]
            square = arrays[1].shape[first] == arrays[1].shape[second]
            k = int(rng.integers(1, 4)) if square else 2
            arrays = [
                np.rot90(a, k, (a.ndim - dims + first, a.ndim - dims + second)) for a in arrays
            ]
        return [np.ascontiguousarray(a) for a in arrays]

    def _resample(self, arrays, axes, dims, rng) -> list[np.ndarray]:
        """Elastic deformation, rotation and scaling in one interpolation, or none at all."""
        displacement = None
        if rng.random() < self.elastic_p and self.sigma > 0:
            displacement = rng.normal(0.0, self.sigma, size=(len(axes), *[self.points] * len(axes)))
        angle = (
            rng.uniform(-self.max_rotation, self.max_rotation)
            if rng.random() < self.rotate_p
            else 0.0
        )
        scale = rng.uniform(*self.scale_range) if rng.random() < self.scale_p else 1.0
        if displacement is None and angle == 0.0 and scale == 1.0:
            return arrays
        shape = [arrays[1].shape[a] for a in axes]
        affine = None
        if angle != 0.0 or scale != 1.0:
            affine = rotation_scaling_affine(shape, angle, scale, (len(axes) - 2, len(axes) - 1))
        if displacement is None:
            displacement = np.zeros((len(axes), *[2] * len(axes)))
        orders = [self.image_order, 0, self.weight_order][: len(arrays)]
        return deform(arrays, displacement, orders, axes, affine, self.backend, self.device)
