"""Reading, writing and opening volumes in any supported format, chosen by the file's suffix.

Each format family lives in its own module (:mod:`~unet_seg.io.nifti`, :mod:`~unet_seg.io.tiff`,
:mod:`~unet_seg.io.png`) with a reader, a lazy opener and a writer; :data:`FORMATS` maps suffixes
to them, so a new family is one module and one entry here. Every input error is a
``FileNotFoundError`` or ``ValueError`` that names the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unet_seg.io import nifti, png, tiff
from unet_seg.io.atomic import replace_atomic
from unet_seg.io.files import format_suffix, is_directory_format
from unet_seg.io.lazy import LazyVolume
from unet_seg.io.limits import check_voxels
from unet_seg.io.volume import Volume, check_finite, check_real_dtype
from unet_seg.io.zarr import output as zarr_output
from unet_seg.io.zarr import store as zarr_store


@dataclass(frozen=True)
class Format:
    """How one format family is read whole, opened lazily and written (to a temporary path)."""

    read: Callable[[Path], Volume]
    open: Callable[[Path], LazyVolume]
    write: Callable[[Path, Volume], None]


_NIFTI = Format(nifti.read_nifti, nifti.NiftiVolume, nifti.write_nifti)
_TIFF = Format(tiff.read_tiff, tiff.TiffVolume, tiff.write_tiff)
_ZARR = Format(zarr_store.read_zarr, zarr_store.ZarrVolume, zarr_output.write_zarr_volume)
FORMATS: dict[str, Format] = {
    ".nii": _NIFTI,
    ".nii.gz": _NIFTI,
    ".tif": _TIFF,
    ".tiff": _TIFF,
    ".png": Format(png.read_png, png.open_png, png.write_png),
    ".ome.zarr": _ZARR,
    ".zarr": _ZARR,
}


def _existing(path: str | os.PathLike) -> tuple[Path, str]:
    path = Path(path)
    suffix = format_suffix(path)
    if not (path.is_dir() if is_directory_format(path) else path.is_file()):
        raise FileNotFoundError(f"{path}: no such file")
    return path, suffix


def read_volume(
    path: str | os.PathLike,
    *,
    ndim: int | tuple[int, ...] | None = None,
    finite: bool = True,
    max_voxels: int | None = None,
) -> Volume:
    """Read an image or volume into a :class:`Volume` (axes ``(z, y, x)``).

    Every reader first checks that the file holds the data its header declares
    (:mod:`unet_seg.io.limits`), so a corrupt header never makes it allocate what it claims.

    Args:
        ndim: accepted array dimensionalities; ``ValueError`` for others (None: any).
        finite: raise ``ValueError`` if float data hold NaN/Inf.
        max_voxels: refuse volumes with more voxels (None: no limit), before reading them.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported suffix, unreadable/corrupt/truncated file, wrong ``ndim``, NaN/Inf,
            more than ``max_voxels``.
    """
    path, suffix = _existing(path)
    if max_voxels is not None:
        check_voxels(path, open_volume(path).shape, max_voxels)  # the header only
    try:
        volume = FORMATS[suffix].read(path)
    except MemoryError:
        raise  # a file too big for memory is not corrupt: open_volume reads it slab-wise
    except ValueError as err:
        if str(path) in str(err):
            raise  # our own checks already name the file and the problem
        raise ValueError(
            f"{path}: cannot read {suffix} file, corrupt or truncated? ({err})"
        ) from err
    except Exception as err:  # readers raise many types; all mean the file is unusable
        raise ValueError(
            f"{path}: cannot read {suffix} file, corrupt or truncated? ({err})"
        ) from err
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and volume.array.ndim not in allowed:
        raise ValueError(
            f"{path}: expected an array with {' or '.join(map(str, allowed))} dimensions, "
            f"got shape {volume.array.shape}"
        )
    check_real_dtype(volume.array.dtype, path)
    if finite:
        check_finite(volume.array, path)
    return volume


def open_volume(path: str | os.PathLike, *, max_voxels: int | None = None) -> LazyVolume:
    """Open ``path`` for lazy, region-wise reads; errors as in :func:`read_volume`."""
    path, suffix = _existing(path)
    try:
        volume = FORMATS[suffix].open(path)
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"{path}: cannot open {suffix} file ({err})") from err
    except Exception as err:
        raise ValueError(f"{path}: cannot open {suffix} file ({err})") from err
    check_real_dtype(volume.dtype, path)
    check_voxels(path, volume.shape, max_voxels)
    return volume


def write_volume(path: str | os.PathLike, volume: Volume | np.ndarray) -> Path:
    """Write ``volume`` in the format of ``path``'s suffix, atomically; returns ``path``.

    The data go to a temporary file in the same directory that is renamed when complete, so a
    crash never leaves a half-written file under the final name. Parent directories are created.
    """
    path = Path(path)
    suffix = format_suffix(path)
    if not isinstance(volume, Volume):
        volume = Volume(np.asarray(volume))
    try:
        if is_directory_format(path):  # a store: its writer renames a temporary directory
            FORMATS[suffix].write(path, volume)
        else:
            replace_atomic(lambda tmp: FORMATS[suffix].write(tmp, volume), path)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return path
