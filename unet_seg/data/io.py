"""Reading and writing images and volumes: NIfTI (nibabel), TIFF (tifffile) and PNG (imageio).

Arrays are ``(z, y, x)`` for volumes and ``(y, x)`` for images, channel axis first if any; NIfTI's
``(x, y, z)`` is reversed on read and write (details in :mod:`unet_seg.data.formats`).
:func:`read_volume` / :func:`write_volume` move whole arrays, :func:`open_volume` gives slab-wise
access to volumes larger than memory, and :func:`check_pair` validates an image/label pair. Every
input error is a ``FileNotFoundError`` or ``ValueError`` that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import tifffile

from unet_seg.atomic import replace_atomic
from unet_seg.data.formats import (
    READERS,
    WRITERS,
    Volume,
    affine_from_spacing,
    read_png,
    tiff_layout,
    tiff_spacing,
)

__all__ = [
    "SUPPORTED_SUFFIXES",
    "LazyVolume",
    "Volume",
    "check_finite",
    "check_pair",
    "open_volume",
    "read_volume",
    "write_volume",
]

SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".tif", ".tiff", ".png")


def _suffix(path: Path) -> str:
    """The format suffix of ``path`` (``.nii.gz`` counts as one), lower case."""
    name = path.name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise ValueError(
        f"{path}: unsupported file type {''.join(path.suffixes) or '(none)'}; "
        f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
    )


def _check_readable(path: str | os.PathLike) -> tuple[Path, str]:
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path, suffix


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
    values = np.unique(label)
    allowed = set(range(num_classes)) | ({ignore_index} if ignore_index is not None else set())
    outside = [int(v) for v in values if int(v) not in allowed]
    if outside:
        raise ValueError(
            f"{path}: label values {outside[:10]} are outside the classes 0..{num_classes - 1}"
            + (f" (and ignore_index {ignore_index})" if ignore_index is not None else "")
        )


def read_volume(
    path: str | os.PathLike, *, ndim: int | tuple[int, ...] | None = None, finite: bool = True
) -> Volume:
    """Read an image or volume into a :class:`Volume` (axes ``(z, y, x)``, see module docstring).

    Args:
        ndim: accepted array dimensionalities; ``ValueError`` for others (None: any).
        finite: raise ``ValueError`` if float data hold NaN/Inf.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported suffix, unreadable/corrupt/truncated file, wrong ``ndim``, NaN/Inf.
    """
    path, suffix = _check_readable(path)
    try:
        volume = READERS[suffix](path)
    except MemoryError:
        raise  # a file too big for memory is not corrupt: open_volume reads it slab-wise
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
    if finite:
        check_finite(volume.array, path)
    return volume


def write_volume(path: str | os.PathLike, volume: Volume | np.ndarray) -> Path:
    """Write ``volume`` in the format of ``path``'s suffix, atomically; returns ``path``.

    The data go to a temporary file in the same directory that is renamed when complete, so a
    crash never leaves a half-written file under the final name. Parent directories are created.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not isinstance(volume, Volume):
        volume = Volume(np.asarray(volume))
    try:
        replace_atomic(lambda tmp: WRITERS[suffix](tmp, volume), path)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return path


# ----------------------------------------------------------------------------- lazy access


def _normalize_index(index: Any, ndim: int) -> tuple | None:
    """``index`` as one int/slice per axis, or None if it uses anything else (arrays, None)."""
    index = index if isinstance(index, tuple) else (index,)
    if sum(i is Ellipsis for i in index) > 1:
        raise IndexError("an index can only have a single ellipsis")
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (ndim - len(index) + 1) + index[at + 1 :]
    if len(index) > ndim:
        raise IndexError(f"too many indices for a volume with {ndim} dimensions")
    index = index + (slice(None),) * (ndim - len(index))
    if all(isinstance(i, slice | int | np.integer) for i in index):
        return index
    return None


class LazyVolume:
    """A volume on disk that reads only what is indexed.

    ``lazy[z0:z1]`` reads a slab: NIfTI through nibabel's ``dataobj`` proxy, uncompressed TIFF
    through ``tifffile.memmap``, compressed TIFF stacks page by page (z-slices). Indices are in
    the project's ``(z, y, x)`` order. Int/slice indices are read lazily; fancy indices read the
    whole volume first. Open file handles are not pickled, so instances go to dataloader workers.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path, self._suffix = _check_readable(path)
        self._handle: Any = None
        try:
            if self._suffix in (".nii", ".nii.gz"):
                img = nib.load(self.path)
                self.shape = tuple(reversed(img.shape))
                self.dtype = np.dtype(
                    img.get_data_dtype()
                    if img.dataobj.slope == 1 and img.dataobj.inter == 0
                    else np.float64
                )
                spatial = min(3, len(self.shape))
                self.spacing = tuple(float(z) for z in reversed(img.header.get_zooms()[:spatial]))
                self.affine = np.asarray(img.affine, dtype=np.float64)
                self.metadata: dict[str, Any] = {"nifti_header": img.header.copy()}
                self._mode = "nifti"
            elif self._suffix in (".tif", ".tiff"):
                with tifffile.TiffFile(self.path) as tif:
                    self.shape, self.dtype, axes = tiff_layout(tif, self.path)
                    spatial = min(3, len(self.shape)) - (
                        axes.startswith("C") and len(self.shape) == 3
                    )
                    self.spacing, self.metadata = tiff_spacing(tif, spatial)
                    self.metadata["axes"] = axes
                    contiguous = tif.series[0].dataoffset is not None and not axes.startswith("C")
                    paged = (
                        len(self.shape) == 3
                        and len(tif.pages) == self.shape[0]
                        and (tif.pages[0].shape == self.shape[1:])
                    )
                self._mode = "memmap" if contiguous else "pages" if paged else "eager"
                self.affine = affine_from_spacing(self.spacing)
            else:
                volume = read_png(self.path)
                self._handle = volume.array
                self.shape, self.dtype = volume.array.shape, volume.array.dtype
                self.spacing, self.affine, self.metadata = volume.spacing, volume.affine, {}
                self._mode = "eager"
        except Exception as err:
            raise ValueError(f"{self.path}: cannot open {self._suffix} file ({err})") from err

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyVolume({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self._suffix != ".png":
            state["_handle"] = None  # memmaps and open TIFFs stay in the process that opened them
        return state

    def close(self) -> None:
        """Release the open TIFF or memmap (reopened on the next read)."""
        if self._suffix != ".png" and self._handle is not None:
            if isinstance(self._handle, tifffile.TiffFile):
                self._handle.close()
            self._handle = None

    def __enter__(self) -> LazyVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self) -> Volume:
        """The whole volume, eagerly (same as :func:`read_volume`)."""
        return read_volume(self.path)

    def __getitem__(self, index: Any) -> np.ndarray:
        simple = _normalize_index(index, self.ndim)
        if simple is None:
            return self[...][index]
        try:
            return self._read(simple)
        except ValueError:
            raise  # the format readers' errors already name the file and the problem
        except Exception as err:
            where = "" if index is Ellipsis else f" region {index!r}"
            raise ValueError(f"{self.path}: cannot read{where} ({err})") from err

    def _read(self, index: tuple) -> np.ndarray:
        if self._mode == "nifti":
            proxy = nib.load(self.path).dataobj
            return np.ascontiguousarray(np.asanyarray(proxy[index[::-1]]).T)
        if self._mode == "memmap":
            if self._handle is None:
                self._handle = tifffile.memmap(self.path, mode="r")
            return np.array(self._handle[index])
        if self._mode == "pages":
            if self._handle is None:
                self._handle = tifffile.TiffFile(self.path)
            pages = self._handle.pages
            z, rest = index[0], index[1:]
            if isinstance(z, int | np.integer):
                return pages[range(self.shape[0])[z]].asarray()[rest]
            planes = [pages[i].asarray()[rest] for i in range(self.shape[0])[z]]
            if not planes:
                return np.empty((0, *np.empty(self.shape[1:])[rest].shape), dtype=self.dtype)
            return np.stack(planes)
        if self._handle is None:
            self._handle = read_volume(self.path).array
        return np.array(self._handle[index])


def open_volume(path: str | os.PathLike) -> LazyVolume:
    """Open ``path`` for lazy, slab-wise reads (:class:`LazyVolume`); errors as in `read_volume`."""
    return LazyVolume(path)
