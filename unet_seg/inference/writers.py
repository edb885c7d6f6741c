"""Slab-by-slab writers for predictions: NIfTI, TIFF and PNG, written atomically.

Each writer exposes the output as an array on disk (a memmap) that slabs of z-rows are written
into, so a prediction never holds the whole output volume in memory. Data go to a hidden
temporary file in the target directory that is renamed when complete; an exception removes it.

- TIFF: ``tifffile.memmap`` (uncompressed). Label maps are ImageJ hyperstacks carrying the ImageJ
  spacing; dtypes or layouts ImageJ cannot hold (float16, channels first) use tifffile's JSON
  description with ``spacing``/``unit``/``axes``, which :mod:`unet_seg.data.io` reads back.
- NIfTI: C-order ``(C, z, y, x)`` bytes are exactly NIfTI's Fortran-order ``(x, y, z, C)`` data
  stream, so the data follow a nibabel-written header byte for byte. ``.nii`` is memory-mapped
  behind the header; ``.nii.gz`` is written to a raw memmap and gzip-streamed behind the header at
  commit, chunk by chunk. The input's header (affine, units, description) is kept.
- PNG: 2D only, small, held in memory and written at commit through :mod:`unet_seg.data.io`.
"""

from __future__ import annotations

import gzip
import io as _io
import mmap
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import tifffile

from unet_seg.data.io import Volume, write_volume

_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)
_COPY_CHUNK = 16 << 20  # bytes per gzip write: bounded memory for any volume size


def format_suffix(path: str | os.PathLike) -> str:
    """``.nii.gz``, ``.nii``, ``.tif``, ``.tiff`` or ``.png`` (lower case); ValueError otherwise."""
    name = Path(path).name.lower()
    for suffix in (".nii.gz", ".nii", ".tiff", ".tif", ".png"):
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"{path}: unsupported output format (use .nii, .nii.gz, .tif, .tiff, .png)")


def _nifti_header(shape: tuple[int, ...], dtype: np.dtype, geometry: Any) -> nib.Nifti1Header:
    """Header for C-order ``shape`` ``(*lead, z, y, x)``: the input's header if it had one."""
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


def _header_bytes(header: nib.Nifti1Header) -> bytes:
    """The header and its extensions, padded to ``vox_offset`` (a multiple of 16)."""
    probe = _io.BytesIO()
    header.write_to(probe)
    offset = -(-len(probe.getvalue()) // 16) * 16
    header.set_data_offset(offset)
    out = _io.BytesIO()
    header.write_to(out)
    return out.getvalue().ljust(offset, b"\0")


class SlabWriter:
    """An output array ``(*lead, Z, Y, X)`` (or ``(*lead, Y, X)`` for 2D) written by z-slabs.

    Args:
        path: final file; its suffix picks the format.
        shape: full array shape, channel axes (if any) first.
        dtype: stored dtype.
        geometry: object with ``affine``, ``spacing`` (spatial, array order) and ``metadata``
            (e.g. the input's :class:`~unet_seg.data.io.LazyVolume`), copied to the output.
        spatial_dims: 2 or 3 trailing spatial axes.

    Use as a context manager: the file appears under ``path`` only if the block completes.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: tuple[int, ...],
        dtype: Any,
        geometry: Any,
        spatial_dims: int,
    ) -> None:
        self.path = Path(path)
        self.suffix = format_suffix(self.path)
        self.shape, self.dtype, self.geometry = tuple(shape), np.dtype(dtype), geometry
        self.spatial_dims = spatial_dims
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}")
        self._raw: Path | None = None
        self._header = b""
        if self.suffix == ".png":
            self.array = np.zeros(self.shape, self.dtype)
        elif self.suffix in (".tif", ".tiff"):
            self.array = self._open_tiff()
        else:
            self._header = _header_bytes(_nifti_header(self.shape, self.dtype, geometry))
            target = self.tmp if self.suffix == ".nii" else Path(f"{self.tmp}.raw")
            self._raw = None if self.suffix == ".nii" else target
            offset = len(self._header) if self.suffix == ".nii" else 0
            with open(target, "wb") as f:
                f.write(self._header if self.suffix == ".nii" else b"")
                f.truncate(offset + int(np.prod(self.shape)) * self.dtype.itemsize)
            self.array = np.memmap(target, self.dtype, "r+", offset, self.shape)

    def _open_tiff(self) -> np.memmap:
        spacing = tuple(self.geometry.spacing)[-self.spatial_dims :]
        unit = (self.geometry.metadata or {}).get("unit") or "um"
        resolution = (1.0 / spacing[-1], 1.0 / spacing[-2])
        if self.dtype.type in _IMAGEJ_DTYPES and len(self.shape) == self.spatial_dims:
            meta: dict[str, Any] = {"axes": "ZYX"[3 - self.spatial_dims :], "unit": unit}
            if self.spatial_dims == 3:
                meta["spacing"] = spacing[0]
            kwargs: dict[str, Any] = {"imagej": True, "metadata": meta}
        else:
            axes = "C" * (len(self.shape) - self.spatial_dims) + "ZYX"[3 - self.spatial_dims :]
            meta = {"spacing": list(spacing), "unit": unit, "axes": axes}
            kwargs = {"metadata": meta, "photometric": "minisblack"}
        return tifffile.memmap(
            self.tmp, shape=self.shape, dtype=self.dtype, resolution=resolution, **kwargs
        )

    def write(self, z0: int, block: np.ndarray, axis: int = 0) -> None:
        """Write rows ``z0 .. z0 + n - 1`` along spatial ``axis`` (0: z, 1: y, 2: x).

        ``block`` is ``(*lead, n, A, B)``: the ``n`` rows first, the other two spatial axes in
        their order (how a 2D model sliced along ``axis`` sees the volume); ``n == 1`` in 2D.
        """
        if self.spatial_dims == 2:
            self.array[...] = block[..., 0, :, :]
            return
        block = np.moveaxis(block, -3, -3 + axis)
        index = [slice(None)] * 3
        index[axis] = slice(z0, z0 + block.shape[-3 + axis])
        self.array[(Ellipsis, *index)] = block
        self._release()

    def _release(self) -> None:
        """Write the dirty pages out and drop them from memory: a memmap's written pages would
        otherwise stay resident and the process would grow with the output volume."""
        mm = getattr(self.array, "_mmap", None)
        if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self.array.flush()
            mm.madvise(mmap.MADV_DONTNEED)

    def commit(self) -> Path:
        """Finish the file and move it to ``path`` (on failure nothing is left behind)."""
        try:
            return self._commit()
        except BaseException:
            self.abort()
            raise

    def _commit(self) -> Path:
        if self.suffix == ".png":
            write_volume(self.path, Volume(self.array, spacing=self.geometry.spacing[-2:]))
            return self.path
        self.array.flush()
        del self.array
        if self.suffix == ".nii.gz":
            with open(self._raw, "rb") as raw, gzip.open(self.tmp, "wb", compresslevel=1) as out:
                out.write(self._header)
                shutil.copyfileobj(raw, out, _COPY_CHUNK)  # why level 1: labels compress well
            self._raw.unlink()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial output."""
        self.__dict__.pop("array", None)
        for leftover in (self.tmp, self._raw):
            if leftover is not None:
                leftover.unlink(missing_ok=True)

    def __enter__(self) -> SlabWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
