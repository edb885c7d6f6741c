"""Writing an output volume slab by slab or block by block, so that a prediction never holds it
whole in memory.

The output is an array on disk that slabs of z-rows or boxes are written into with ``pwrite``
(:class:`~unet_seg.io.file_array.FileArray`, not a memory map: a refused write through a map is
a SIGBUS that kills the process, through ``pwrite`` it is an
:class:`~unet_seg.errors.OutputWriteError` naming the file). Data go to a hidden temporary file
in the target directory that is renamed when complete; an exception removes it. The file's
blocks are reserved on disk before the first write (:func:`~unet_seg.io.atomic.allocate`), so a
full disk is reported before any work. The temporary file is locked while it is written and
fsynced before the rename (:mod:`unet_seg.io.atomic`). Per format:

- TIFF: uncompressed and contiguous, with the spacing stored as :mod:`unet_seg.io.tiff`
  writes it.
- NIfTI: ``.nii`` data sit behind the header (:func:`unet_seg.io.nifti.header_bytes`);
  ``.nii.gz`` is written to a raw file and gzip-streamed behind the header at commit, chunk by
  chunk. The input's header (affine, units, description) is kept.
- PNG: 2D only, small, held in memory and written at commit.
"""

from __future__ import annotations

import gzip
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.io import nifti, tiff
from unet_seg.io.atomic import MARK, allocate, commit_rename, lock, write_error
from unet_seg.io.file_array import FileArray
from unet_seg.io.files import format_suffix
from unet_seg.io.volume import Volume
from unet_seg.io.volumes import write_volume

_COPY_CHUNK = 16 << 20  # bytes per gzip write: bounded memory for any volume size


class SlabWriter:
    """An output array ``(*lead, Z, Y, X)`` (or ``(*lead, Y, X)`` for 2D) written by z-slabs.

    Args:
        path: final file; its suffix picks the format.
        shape: full array shape, channel axes (if any) first.
        dtype: stored dtype.
        geometry: object with ``affine``, ``spacing`` (spatial, array order) and ``metadata``
            (e.g. the input's :class:`~unet_seg.io.LazyVolume`), copied to the output.
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
        self.tmp = self.path.with_name(f".{self.path.name}.{MARK}-partial-{uuid.uuid4().hex[:8]}")
        self._raw: Path | None = None
        self._header = b""
        self._fd: int | None = None  # holds the lock on the file being written
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._create()
        except BaseException as err:
            self.abort()
            if isinstance(err, OSError):
                raise write_error(self.path, err) from err
            raise

    def _create(self) -> None:
        if self.suffix == ".png":
            self.array = np.zeros(self.shape, self.dtype)
            return
        if self.suffix in (".tif", ".tiff"):
            spacing = tuple(self.geometry.spacing)[-self.spatial_dims :]
            meta = self.geometry.metadata or {}
            axes = tiff.output_axes(meta, len(spacing))  # the input's: a time axis stays one
            offset = tiff.create_empty(self.tmp, self.shape, self.dtype, spacing,
                                       meta.get("unit"), axes)  # fmt: skip
            self._hold(self.tmp, os.path.getsize(self.tmp), offset)
            return
        header = nifti.header_bytes(nifti.slab_header(self.shape, self.dtype, self.geometry))
        self._header = header
        target = self.tmp if self.suffix == ".nii" else Path(f"{self.tmp}.raw")
        self._raw = None if self.suffix == ".nii" else target
        offset = len(header) if self.suffix == ".nii" else 0
        with open(target, "wb") as f:
            f.write(header if self.suffix == ".nii" else b"")
        self._hold(target, offset + int(np.prod(self.shape)) * self.dtype.itemsize, offset)

    def _hold(self, file: Path, size: int, offset: int) -> None:
        """Lock ``file`` for as long as this writer lives, reserve its ``size`` bytes and
        address its data from byte ``offset`` on."""
        self._fd = os.open(file, os.O_RDWR)
        lock(self._fd)
        allocate(self._fd, size, self.path)
        self.array = FileArray(self._fd, offset, self.shape, self.dtype)

    def write(self, z0: int, block: np.ndarray, axis: int = 0) -> None:
        """Write rows ``z0 .. z0 + n - 1`` along spatial ``axis`` (0: z, 1: y, 2: x).

        ``block`` is ``(*lead, n, A, B)``: the ``n`` rows first, the other two spatial axes in
        their order (how a 2D model sliced along ``axis`` sees the volume); ``n == 1`` in 2D.
        """
        if self.spatial_dims == 2:
            self.write_box((slice(None), slice(None)), block[..., 0, :, :])
            return
        block = np.moveaxis(block, -3, -3 + axis)
        index = [slice(None)] * 3
        index[axis] = slice(z0, z0 + block.shape[-3 + axis])
        self.write_box(tuple(index), block)

    def write_box(self, box: tuple[slice, ...], data: np.ndarray) -> None:
        """Write ``data`` ``(*lead, *box)`` into the spatial ``box`` (the file's axis order, all
        leading axes): how a block writes the output region it owns.

        Raises:
            OutputWriteError: the disk refused the data; names ``path``.
        """
        try:
            self.array[(Ellipsis, *box)] = data
        except OSError as err:
            raise write_error(self.path, err) from err

    def read_box(self, box: tuple[slice, ...]) -> np.ndarray:
        """The data written so far in the spatial ``box`` (all leading axes)."""
        return np.array(self.array[(Ellipsis, *box)])

    def commit(self) -> Path:
        """Finish the file and move it to ``path`` (on failure nothing is left behind).

        Raises:
            OutputWriteError: the disk refused the data (full, I/O error); names ``path``.
        """
        try:
            return self._commit()
        except OSError as err:
            self.abort()
            raise write_error(self.path, err) from err
        except BaseException:
            self.abort()
            raise

    def _commit(self) -> Path:
        if self.suffix == ".png":
            write_volume(self.path, Volume(self.array, spacing=self.geometry.spacing[-2:]))
            return self.path
        del self.array
        if self.suffix == ".nii.gz":
            with open(self._raw, "rb") as raw, gzip.open(self.tmp, "wb", compresslevel=1) as out:
                out.write(self._header)
                shutil.copyfileobj(raw, out, _COPY_CHUNK)  # why level 1: labels compress well
            self._raw.unlink()
        commit_rename(self.tmp, self.path)
        self._release_lock()
        return self.path

    def _release_lock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def abort(self) -> None:
        """Drop the partial output."""
        self.__dict__.pop("array", None)
        for leftover in (self.tmp, self._raw):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        self._release_lock()

    def __enter__(self) -> SlabWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
