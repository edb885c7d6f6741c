"""NIfTI (``.nii``, ``.nii.gz``) through nibabel: read, open lazily, write whole or by slabs.

NIfTI stores voxels as ``(x, y, z[, t])`` (``i, j, k`` of the affine). Reading reverses all axes,
so ``array[z, y, x] == nifti_data[x, y, z]`` and a 4th NIfTI axis becomes the leading axis;
writing reverses them back.

The affine is kept as in the file: it still maps NIfTI's ``(i, j, k) = (x, y, z)`` voxel indices
to world coordinates. ``spacing`` is the reversed zooms.

What the 4th axis holds (:func:`fourth_axis`): NIfTI-1 makes it time, but the Medical
Segmentation Decathlon and nnU-Net's raw data stack modalities there, and ITK-written files
often give it the time unit "s" with a step of 1 whatever it holds. So it is **time** where the
header gives it a time unit (``xyzt_units``: s, ms or us) and a step (``pixdim[4]``) other than
0 and 1 (an fMRI's TR), and **channels** otherwise, as before. Time points are never read as
channels: a time axis of length 1 is read past (``metadata["nifti_time"]`` keeps its step and
unit) and written back in the outputs, labels ``(x, y, z, 1)`` and probabilities
``(x, y, z, 1, K)`` (classes in the 5th axis, NIfTI's place for vector components); a longer
one is ``axes="TZYX"``, which predict refuses naming the axes.

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


TIME_UNITS = ("sec", "msec", "usec")  # xyzt_units' time bits that make the 4th axis time


def fourth_axis(header: nib.Nifti1Header) -> str | None:
    """``"time"`` or ``"channels"``: what the 4th axis of a 4D file holds (see the module's
    rule); None for other files."""
    if len(header.get_data_shape()) != 4:
        return None
    unit = header.get_xyzt_units()[1]
    step = float(header["pixdim"][4])
    return "time" if unit in TIME_UNITS and step > 0 and step != 1.0 else "channels"


def _single_time(img: nib.Nifti1Image) -> bool:
    """A 4D file whose 4th axis is time of length 1: read as its one 3D volume."""
    return fourth_axis(img.header) == "time" and img.shape[3] == 1


def _metadata(img: nib.Nifti1Image) -> dict[str, Any]:
    """The header (kept for writing), the spatial unit and, for a 4D file, what its 4th axis
    holds: ``axes="CZYX"`` (channels, which predict's ``channel`` picks), ``"TZYX"`` (time
    points), or a time axis of length 1 read past (``nifti_time``); ``time_axis``: the step and
    unit of a time axis."""
    meta = {"nifti_header": img.header.copy(), "unit": img.header.get_xyzt_units()[0]}
    kind = fourth_axis(img.header)
    if kind == "time":  # its step and unit, for outputs of other formats (convert)
        step, unit = float(img.header["pixdim"][4]), img.header.get_xyzt_units()[1]
        meta["time_axis"] = {"step": step, "unit": unit}
    if _single_time(img):
        meta["nifti_time"] = meta["time_axis"]  # read past: NIfTI outputs put it back
        meta["axes"] = "ZYX"
    elif kind is not None:
        meta["axes"] = "TZYX" if kind == "time" else "CZYX"
    return meta


def read_nifti(path: Path) -> Volume:
    img = load_checked(path)
    array = np.asanyarray(img.dataobj).T  # (x, y, z[, t]) -> ([t,] z, y, x)
    if _single_time(img):
        array = array[0]
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
        self._time = _single_time(img)  # read past the time axis of length 1
        shape = tuple(reversed(img.shape))[int(self._time) :]
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
        where = index[::-1] + ((0,) if self._time else ())
        return np.ascontiguousarray(np.asanyarray(proxy[where]).T)


def _with_time(data: np.ndarray, metadata: dict | None) -> np.ndarray:
    """NIfTI-order ``(x, y, z, *rest)`` data with the input's time axis of length 1 put back as
    the 4th axis where ``metadata`` has one (``nifti_time``) and the data are 3D or more."""
    if (metadata or {}).get("nifti_time") is None or data.ndim < 3:
        return data
    return np.expand_dims(data, 3)


def write_nifti(tmp: Path, volume: Volume) -> None:
    header = volume.metadata.get("nifti_header")
    data = _with_time(volume.array.T, volume.metadata)
    img = nib.Nifti1Image(data, volume.affine, header=header)
    img.header.set_data_dtype(volume.array.dtype)
    img.header.set_zooms(
        tuple(reversed(volume.spacing)) + img.header.get_zooms()[len(volume.spacing) :]
    )
    if data.ndim == 5:  # classes after the time axis: NIfTI's vector components
        img.header.set_intent("vector")
    if header is None:
        img.header.set_xyzt_units(volume.metadata.get("unit") or "mm")
    nib.save(img, tmp)


def slab_header(shape: tuple[int, ...], dtype: np.dtype, geometry: Any) -> nib.Nifti1Header:
    """Header for C-order ``shape`` ``(*lead, z, y, x)``: the input's header if it had one.

    ``geometry`` has ``affine``, ``spacing`` and ``metadata`` (a Volume or LazyVolume).
    """
    metadata = getattr(geometry, "metadata", None) or {}
    source = metadata.get("nifti_header")
    header = nib.Nifti1Header() if source is None else nib.Nifti1Header.from_header(source)
    if source is None:
        header.set_qform(geometry.affine, code=1)
        header.set_sform(geometry.affine, code=1)
        header.set_xyzt_units(metadata.get("unit") or "mm")
    # The input's time axis of length 1 goes back in as the 4th axis: C-order (K, z, y, x)
    # bytes are NIfTI's (x, y, z, 1, K) as they are (:func:`_with_time`).
    time = metadata.get("nifti_time") is not None and len(shape) >= 3
    nifti_shape = tuple(reversed(shape))
    if time:
        nifti_shape = (*nifti_shape[:3], 1, *nifti_shape[3:])
    header.set_data_shape(nifti_shape)
    if time and len(shape) > 3:
        header.set_intent("vector")  # the classes in the 5th axis, after time
        header.set_zooms(header.get_zooms()[:4] + (1.0,) * (len(nifti_shape) - 4))
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
