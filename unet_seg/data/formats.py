"""Per-format readers and writers behind :mod:`unet_seg.data.io`, and the `Volume` they share.

Axis convention, used everywhere in the project: arrays are ``(z, y, x)`` for volumes and
``(y, x)`` for images; a channel axis, if any, comes first, e.g. ``(C, y, x)``.

- NIfTI stores voxels as ``(x, y, z[, t])`` (``i, j, k`` of the affine). Reading reverses all
  axes, so ``array[z, y, x] == nifti_data[x, y, z]`` and a 4th NIfTI axis becomes the leading
  channel axis; writing reverses them back. The affine is kept as in the file: it still maps
  NIfTI's ``(i, j, k) = (x, y, z)`` voxel indices to world coordinates. ``spacing`` is in array
  order, ``(dz, dy, dx)``, i.e. the reversed NIfTI zooms.
- TIFF pages are z-slices; spacing comes from ImageJ metadata (``spacing`` = z step, X/YResolution =
  pixels per unit) or OME ``PhysicalSize{X,Y,Z}``, and is written back as ImageJ resolution/spacing
  (or as tifffile's JSON description for dtypes ImageJ cannot hold, e.g. int64 labels).
- PNG is 2D only (grey, or RGB/RGBA moved to a leading channel axis); spacing is 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import tifffile

_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)


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


def tiff_spacing(tif: tifffile.TiffFile, spatial: int) -> tuple[tuple[float, ...], dict]:
    """Spacing (array order) and metadata from ImageJ, OME or tifffile's JSON description."""
    meta: dict[str, Any] = {}
    spacing = [1.0] * spatial
    page = tif.pages[0]
    if tif.is_imagej:
        ij = tif.imagej_metadata or {}
        meta["unit"] = ij.get("unit")
        for axis, tag in ((-1, "XResolution"), (-2, "YResolution")):
            if tag in page.tags and spatial >= -axis:
                num, den = page.tags[tag].value
                if num:
                    spacing[axis] = den / num
        if spatial >= 3 and "spacing" in ij:
            spacing[-3] = float(ij["spacing"])
    elif tif.is_ome:
        ome = tifffile.xml2dict(tif.ome_metadata)
        image = ome.get("OME", {}).get("Image", {})
        pixels = (image[0] if isinstance(image, list) else image).get("Pixels", {})
        for axis, key in ((-1, "PhysicalSizeX"), (-2, "PhysicalSizeY"), (-3, "PhysicalSizeZ")):
            if key in pixels and spatial >= -axis:
                spacing[axis] = float(pixels[key])
        meta["unit"] = pixels.get("PhysicalSizeXUnit")
    elif tif.shaped_metadata and "spacing" in tif.shaped_metadata[0]:
        stored = [float(s) for s in tif.shaped_metadata[0]["spacing"]]
        spacing[len(spacing) - len(stored[-spatial:]) :] = stored[-spatial:]
        meta["unit"] = tif.shaped_metadata[0].get("unit")
    return tuple(spacing), meta


def tiff_layout(tif: tifffile.TiffFile, path: Path) -> tuple[tuple[int, ...], np.dtype, str]:
    series = tif.series[0]
    axes = series.axes
    shape = tuple(series.shape)
    if axes.endswith("S") and shape[-1] in (3, 4):  # RGB(A) samples -> leading channel axis
        axes = "C" + axes[:-1]
        shape = (shape[-1], *shape[:-1])
    return shape, np.dtype(series.dtype), axes


def read_tiff(path: Path) -> Volume:
    with tifffile.TiffFile(path) as tif:
        shape, _, axes = tiff_layout(tif, path)
        array = tif.series[0].asarray()
        if array.shape != shape:
            array = np.moveaxis(array, -1, 0)
        spatial = min(3, array.ndim) - (1 if axes.startswith("C") and array.ndim == 3 else 0)
        spacing, meta = tiff_spacing(tif, spatial)
    meta["axes"] = axes
    return Volume(array, spacing=spacing, metadata=meta, path=path)


def read_nifti(path: Path) -> Volume:
    img = nib.load(path)
    array = np.asanyarray(img.dataobj).T  # (x, y, z[, t]) -> ([t,] z, y, x)
    spatial = min(3, array.ndim)
    spacing = tuple(float(z) for z in reversed(img.header.get_zooms()[:spatial]))
    meta = {"nifti_header": img.header.copy(), "unit": img.header.get_xyzt_units()[0]}
    return Volume(
        np.ascontiguousarray(array), affine=img.affine, spacing=spacing, metadata=meta, path=path
    )


def read_png(path: Path) -> Volume:
    import imageio.v3 as iio

    array = np.asarray(iio.imread(path))
    if array.ndim == 3:  # (y, x, RGB[A]) -> (C, y, x)
        array = np.moveaxis(array, -1, 0)
    return Volume(array, spacing=(1.0, 1.0), metadata={}, path=path)


READERS: dict[str, Callable[[Path], Volume]] = {
    ".nii": read_nifti,
    ".nii.gz": read_nifti,
    ".tif": read_tiff,
    ".tiff": read_tiff,
    ".png": read_png,
}


def write_tiff(tmp: Path, volume: Volume) -> None:
    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    spacing = volume.spacing
    unit = volume.metadata.get("unit") or "um"
    resolution = (1.0 / spacing[-1], 1.0 / spacing[-2]) if len(spacing) >= 2 else None
    if array.dtype.type in _IMAGEJ_DTYPES and array.ndim <= 3 and len(spacing) == array.ndim:
        meta: dict[str, Any] = {"axes": "ZYX"[3 - array.ndim :], "unit": unit}
        if len(spacing) == 3:
            meta["spacing"] = spacing[0]
        tifffile.imwrite(
            tmp, array, imagej=True, resolution=resolution, metadata=meta, compression="zlib"
        )
    else:  # dtypes or layouts ImageJ cannot hold: tifffile's JSON description keeps the spacing
        tifffile.imwrite(
            tmp,
            array,
            resolution=resolution,
            photometric="minisblack",
            metadata={"spacing": list(spacing), "unit": unit},
            compression="zlib",
        )


def write_nifti(tmp: Path, volume: Volume) -> None:
    header = volume.metadata.get("nifti_header")
    img = nib.Nifti1Image(volume.array.T, volume.affine, header=header)
    img.header.set_data_dtype(volume.array.dtype)
    img.header.set_zooms(
        tuple(reversed(volume.spacing)) + img.header.get_zooms()[len(volume.spacing) :]
    )
    if header is None:
        img.header.set_xyzt_units(volume.metadata.get("unit") or "mm")
    nib.save(img, tmp)


def write_png(tmp: Path, volume: Volume) -> None:
    import imageio.v3 as iio

    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    if array.dtype not in (np.uint8, np.uint16) or array.ndim not in (2, 3):
        raise ValueError(f"PNG holds 2D uint8/uint16 images, got {array.dtype} {array.shape}")
    if array.ndim == 3:
        if array.dtype != np.uint8:
            raise ValueError(f"PNG colour images are written as uint8 only, got {array.dtype}")
        array = np.moveaxis(array, 0, -1)
    iio.imwrite(tmp, array, extension=".png")


WRITERS: dict[str, Callable[[Path, Volume], None]] = {
    ".nii": write_nifti,
    ".nii.gz": write_nifti,
    ".tif": write_tiff,
    ".tiff": write_tiff,
    ".png": write_png,
}
