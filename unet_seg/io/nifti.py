"""NIfTI (``.nii``, ``.nii.gz``) through nibabel: read, open lazily, write whole or by slabs.

NIfTI stores voxels as ``(x, y, z[, t])`` (``i, j, k`` of the affine). Reading reverses all axes,
so ``array[z, y, x] == nifti_data[x, y, z]`` and a 4th NIfTI axis becomes the leading channel
axis; writing reverses them back. The affine is kept as in the file: it still maps NIfTI's
``(i, j, k) = (x, y, z)`` voxel indices to world coordinates. ``spacing`` is the reversed zooms.

For slab-wise writing, C-order ``(C, z, y, x)`` bytes are exactly NIfTI's Fortran-order
``(x, y, z, C)`` data stream, so the data can follow a nibabel-written header byte for byte
(:func:`header_bytes`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from unet_seg.io.lazy import LazyVolume
from unet_seg.io.limits import check_deflated, check_stored, declared_bytes
from unet_seg.io.volume import Volume


def load_checked(path: Path) -> nib.Nifti1Image:
    """``nib.load`` (the header only), then ``ValueError`` unless the file can hold the data the
    header declares: ``vox_offset`` + data bytes for ``.nii``, the deflate limit for ``.nii.gz``."""
    img = nib.load(path)
    data = declared_bytes(img.shape, img.get_data_dtype())
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        check_deflated(path, data, size)
    else:
        check_stored(path, int(img.dataobj.offset) + data, size, "header and voxel data")
    return img


def _spacing(img: nib.Nifti1Image, ndim: int) -> tuple[float, ...]:
    return tuple(float(z) for z in reversed(img.header.get_zooms()[: min(3, ndim)]))


def _metadata(img: nib.Nifti1Image) -> dict[str, Any]:
    """The header (kept for writing), the spatial unit and, for a 4D file, ``axes="CZYX"``: its
    4th axis (time points, channels) is read as channels, which predict's ``channel`` picks."""
    meta = {"nifti_header": img.header.copy(), "unit": img.header.get_xyzt_units()[0]}
    if len(img.shape) == 4:
        meta["axes"] = "CZYX"
    return meta


def read_nifti(path: Path) -> Volume:
    img = load_checked(path)
    array = np.asanyarray(img.dataobj).T  # (x, y, z[, t]) -> ([t,] z, y, x)
    meta = _metadata(img)
    return Volume(
        np.ascontiguousarray(array),
        affine=img.affine,
        spacing=_spacing(img, array.ndim),
        metadata=meta,
        path=path,
    )


class NiftiVolume(LazyVolume):
    """Lazy NIfTI: regions through nibabel's ``dataobj`` proxy (only the bytes needed)."""

    def __init__(self, path: Path) -> None:
        img = load_checked(path)
        shape = tuple(reversed(img.shape))
        unscaled = img.dataobj.slope == 1 and img.dataobj.inter == 0
        super().__init__(
            path,
            shape,
            img.get_data_dtype() if unscaled else np.float64,
            _spacing(img, len(shape)),
            img.affine,
            _metadata(img),
        )

    def _read(self, index: tuple) -> np.ndarray:
        proxy = nib.load(self.path).dataobj
        return np.ascontiguousarray(np.asanyarray(proxy[index[::-1]]).T)


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


def slab_header(shape: tuple[int, ...], dtype: np.dtype, geometry: Any) -> nib.Nifti1Header:
    """Header for C-order ``shape`` ``(*lead, z, y, x)``: the input's header if it had one.

    ``geometry`` has ``affine``, ``spacing`` and ``metadata`` (a Volume or LazyVolume).
    """
    source = (getattr(geometry, "metadata", None) or {}).get("nifti_header")
    header = nib.Nifti1Header() if source is None else nib.Nifti1Header.from_header(source)
    if source is None:
        header.set_qform(geometry.affine, code=1)
        header.set_sform(geometry.affine, code=1)
        header.set_xyzt_units((geometry.metadata or {}).get("unit") or "mm")
    header.set_data_shape(tuple(reversed(shape)))
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)  # labels and probabilities are stored unscaled
    if source is None:
        spacing = tuple(reversed(geometry.spacing))
        header.set_zooms(spacing + (1.0,) * (len(shape) - len(spacing)))
    return header


def header_bytes(header: nib.Nifti1Header) -> bytes:
    """The header and its extensions, padded to ``vox_offset`` (a multiple of 16)."""
    probe = io.BytesIO()
    header.write_to(probe)
    offset = -(-len(probe.getvalue()) // 16) * 16
    header.set_data_offset(offset)
    out = io.BytesIO()
    header.write_to(out)
    return out.getvalue().ljust(offset, b"\0")
