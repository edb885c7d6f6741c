"""The in-memory volume every reader returns and every writer takes, and the checks on its data.

Axis convention, used everywhere in the project: arrays are ``(z, y, x)`` for volumes and
``(y, x)`` for images; a channel axis, if any, comes first, e.g. ``(C, y, x)``. ``spacing`` is in
array order, ``(dz, dy, dx)``. The affine is NIfTI-style: it maps ``(x, y, z, 1)`` voxel indices
to world coordinates (see :mod:`unet_seg.io.nifti` for how NIfTI's axes are reversed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def affine_from_spacing(spacing: tuple[float, ...]) -> np.ndarray:
    """NIfTI-style 4x4 voxel->world affine for ``spacing`` in array order ``(dz, dy, dx)``."""
    xyz = [float(s) for s in reversed(spacing[-3:])]
    xyz += [1.0] * (3 - len(xyz))
    return np.diag([*xyz, 1.0])


@dataclass
class Volume:
    """An array with its geometry.

    Attributes:
        array: ``(*spatial)`` or ``(C, *spatial)``, spatial in ``(z, y, x)`` / ``(y, x)`` order.
        affine: 4x4 NIfTI-style voxel->world matrix (acts on ``(x, y, z, 1)`` indices).
        spacing: voxel size per spatial axis, array order; ``len(spacing)`` spatial axes are the
            last ones of ``array``, any axis before them is a channel axis.
        metadata: format-specific extras (``nifti_header``, ``unit``, ``axes``, ...).
        path: the file it was read from, if any.
    """

    array: np.ndarray
    affine: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.spacing is None:
            self.spacing = (1.0,) * self.array.ndim
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) > self.array.ndim:
            raise ValueError(
                f"{self.path}: spacing {self.spacing} has more entries than the array has axes "
                f"(shape {self.array.shape})"
            )
        if self.affine is None:
            self.affine = affine_from_spacing(self.spacing)
        self.affine = np.asarray(self.affine, dtype=np.float64)


def check_real_dtype(dtype: np.dtype, path: str | os.PathLike | None) -> None:
    """``ValueError`` naming ``path`` unless ``dtype`` holds real numbers (bool, integer or
    float): complex data (an FFT, a phase image) or records have no one intensity per voxel."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biuf":  # bool, signed and unsigned integers, floats
        return
    what = "complex values" if np.issubdtype(dtype, np.complexfloating) else "non-numeric data"
    raise ValueError(
        f"{path}: {what} (dtype {dtype}), not an image of real intensities; save the "
        "magnitude (or the real part) as a real-valued image first"
    )


def check_finite(array: np.ndarray, path: str | os.PathLike | None) -> None:
    """``ValueError`` naming ``path`` if a float ``array`` holds NaN or Inf."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{path}: {bad} NaN/Inf values in the image data")


def check_pair(
    image: np.ndarray,
    label: np.ndarray,
    num_classes: int,
    path: str | os.PathLike | None = None,
    ignore_index: int | None = -1,
    spatial_dims: int | None = None,
) -> None:
    """Check that a label fits its image: same spatial shape and values in ``[0, num_classes)``.

    Args:
        image: ``(*spatial)`` or ``(C, *spatial)``.
        label: ``(*spatial)`` class indices; ``ignore_index`` values are allowed too.
        spatial_dims: number of trailing image axes to compare (default: ``label.ndim``).
    """
    nd = label.ndim if spatial_dims is None else spatial_dims
    if image.shape[image.ndim - nd :] != label.shape[label.ndim - nd :] or label.ndim != nd:
        raise ValueError(
            f"{path}: image shape {image.shape} does not match label shape {label.shape}"
        )
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
        raise ValueError(f"{path}: labels must be integers, got dtype {label.dtype}")
    check_label_values(label, num_classes, path, ignore_index)


def check_label_values(
    label: np.ndarray,
    num_classes: int,
    path: str | os.PathLike | None = None,
    ignore_index: int | None = -1,
) -> None:
    """``ValueError`` naming ``path`` unless every value of ``label`` (integer classes, any
    shape: a whole label or one block of it) is in ``[0, num_classes)`` or ``ignore_index``."""
    values = np.unique(label)
    allowed = set(range(num_classes)) | ({ignore_index} if ignore_index is not None else set())
    outside = [int(v) for v in values if int(v) not in allowed]
    if outside:
        ignored = f" (and ignore_index {ignore_index})" if ignore_index is not None else ""
        # Many values: object ids rather than a few stray classes.
        hint = ": object ids, as Cellpose/StarDist save masks? data.label_map=objects reads them"
        raise ValueError(
            f"{path}: label values {outside[:10]} are outside the classes 0..{num_classes - 1}"
            f"{ignored}{hint if len(outside) > 3 else ''}"
        )
