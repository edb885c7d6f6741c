"""Zarr / OME-Zarr outputs written block by block, resumably, and renamed when complete.

A :class:`ZarrOutput` lives under a hidden name ``.<name>.unet-seg-partial`` beside its final path
while blocks are written into its full-resolution array (``0``). After a block's chunks are written,
:meth:`ZarrOutput.record` stores a small record for it; a rerun with the same ``fingerprint``
(shape, dtype, chunks, block plan and model) reopens the partial store and skips the recorded
blocks, a different fingerprint starts afresh. :meth:`ZarrOutput.commit` adds the multiscale
pyramid (nearest for label images, mean for the rest) and the OME-NGFF metadata (written through
``ome-zarr-models``), removes the records and renames the store to its final name.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.io.atomic import MARK, commit_dir, write_error, write_json_atomic
from unet_seg.io.volume import Volume
from unet_seg.io.zarr.ngff import build_pyramid, write_ome_metadata
from unet_seg.io.zarr.store import ngff_unit, zarr_suffix

_ABORT_TRIES, _ABORT_SETTLE_S = 20, 0.02
RECORDS = ".unet_seg_blocks"  # inside the partial store; removed at commit


def partial_store(path: str | os.PathLike) -> Path:
    """Where the output store ``path`` is written until complete (hidden, beside it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{MARK}-partial")


def _zarr():
    import zarr  # imported where a zarr output is made, not by every unet_seg import

    return zarr


class ZarrOutput:
    """A ``(C?, *spatial)`` output array, chunked, written by blocks from any process.

    Args:
        path: final ``.zarr`` (a plain array) or ``.ome.zarr`` (an OME-Zarr image) directory.
        shape, dtype, chunks: the full-resolution array.
        ome: ``None`` for a plain array; else ``{"version": "0.4" | "0.5", "axes": [...],
            "scale": spatial spacing, "name": ...}`` where ``axes`` are the spatial NGFF axes
            (dicts with name, type, unit; a time axis may carry its step as ``scale``); a leading
            channel axis is added when ``shape`` has one. ``ome["time"]``: time axes of length 1
            the store has in front of ``shape`` (NGFF axes with their ``scale``, as
            :class:`~unet_seg.io.zarr.store.ZarrVolume` reads an input's), so that outputs keep
            an input's ``t``; ``shape``, ``chunks`` and the boxes written stay without them.
        label_image: pyramid by nearest neighbour, else by mean.
        fingerprint: what must match for a rerun to reuse recorded blocks.
        label_mark: for an OME-Zarr label image, its NGFF ``image-label`` fields (``{}``, or the
            colours and properties of :func:`~unet_seg.io.zarr.ngff.class_label_mark`), written on
            commit so readers open the store as labels; None: no mark (raw images).

    Only paths are pickled: Dask workers reopen the store to write their blocks.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: Sequence[int],
        dtype: Any,
        chunks: Sequence[int],
        ome: dict | None,
        label_image: bool,
        fingerprint: dict,
        zarr_format: int = 3,
        label_mark: dict | None = None,
    ) -> None:
        self.path = Path(path)
        self.label_mark = label_mark
        self.partial = partial_store(self.path)
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.chunks = tuple(min(int(c), s) for c, s in zip(chunks, self.shape, strict=True))
        self.times = len((ome or {}).get("time") or ())  # length-1 time axes stored in front
        self.ome, self.label_image = ome, label_image
        self.zarr_format = 2 if ome and str(ome["version"]) == "0.4" else int(zarr_format)
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))

    @property
    def records(self) -> Path:
        return self.partial / RECORDS

    def open(self) -> set[int]:
        """Create the partial store, or reopen a matching one; returns the recorded blocks.
        A store that cannot be created (full disk, no permission) is an
        :class:`~unet_seg.errors.OutputWriteError` naming the output, and nothing is left."""
        try:
            return self._open_partial()
        except OSError as err:
            self.abort()
            raise write_error(self.path, err) from err

    def _open_partial(self) -> set[int]:
        plan = self.records / "plan.json"
        if self.partial.exists():
            try:
                same = json.loads(plan.read_text()) == self.fingerprint
            except (OSError, ValueError):
                same = False
            if same:
                return self.done()
            shutil.rmtree(self.partial)
        zarr = _zarr()
        names = {"dimension_names": self._axis_names()} if self.zarr_format == 3 else {}
        lead = (1,) * self.times
        spec = dict(shape=lead + self.shape, dtype=self.dtype, chunks=lead + self.chunks,
                    fill_value=0, **names)  # fmt: skip
        if self.ome is None:  # a plain array at the store's root
            zarr.create_array(str(self.partial), zarr_format=self.zarr_format, **spec)
        else:
            root = zarr.open_group(str(self.partial), mode="w", zarr_format=self.zarr_format)
            root.create_array("0", **spec)
        self.records.mkdir()
        write_json_atomic(plan, self.fingerprint)
        return set()

    def done(self) -> set[int]:
        """Indices of the blocks recorded as written."""
        if not self.records.is_dir():
            return set()
        return {int(p.stem) for p in self.records.glob("[0-9]*.json")}

    def write(self, box: Sequence[slice], data: np.ndarray) -> None:
        """Write ``data`` into the spatial ``box`` (all channels)."""
        lead = (0,) * self.times + (slice(None),) * (len(self.shape) - len(box))
        try:
            self._array()[(*lead, *box)] = data.astype(self.dtype, copy=False)
        except OSError as err:  # a full disk: named, so the caller can tell it from a bug
            raise write_error(self.path, err) from err

    def read(self, box: Sequence[slice]) -> np.ndarray:
        """The data of the spatial ``box`` (all channels) written so far."""
        lead = (0,) * self.times + (slice(None),) * (len(self.shape) - len(box))
        return np.asarray(self._array()[(*lead, *box)])

    def records_of(self) -> dict[int, dict]:
        """Block index -> the info recorded with it."""
        if not self.records.is_dir():
            return {}
        return {int(p.stem): json.loads(p.read_text()) for p in self.records.glob("[0-9]*.json")}

    def record(self, index: int, info: dict) -> None:
        """Mark block ``index`` as written (call after all its chunks are written)."""
        try:
            write_json_atomic(self.records / f"{index:08d}.json", info)
        except OSError as err:
            raise write_error(self.path, err) from err

    def commit(self) -> Path:
        """Pyramid, metadata, then the rename to the final path; returns it. A write error is an
        :class:`~unet_seg.errors.OutputWriteError` naming the output (the partial store stays)."""
        try:
            if self.ome is not None:
                levels = build_pyramid(self.partial, self.label_image)
                write_ome_metadata(self.partial, levels, self._ome_axes(), self.ome,
                                   self.zarr_format, self.label_image, self.label_mark)  # fmt: skip
            shutil.rmtree(self.records, ignore_errors=True)
            commit_dir(self.partial, self.path)
        except OSError as err:
            raise write_error(self.path, err) from err
        return self.path

    def abort(self) -> None:
        """Remove the partial store. A zarr write that failed (a full disk) may leave writes of
        its other chunks in flight on zarr's event loop, which recreate folders after a first
        removal: remove again until the store stays gone for a moment."""
        for _ in range(_ABORT_TRIES):
            shutil.rmtree(self.partial, ignore_errors=True)
            time.sleep(_ABORT_SETTLE_S)
            if not self.partial.exists():
                return

    def _array(self):
        array = self.__dict__.get("_open_array")
        if array is None:
            where = self.partial if self.ome is None else self.partial / "0"
            array = _zarr().open_array(str(where), mode="r+")
            self.__dict__["_open_array"] = array
        return array

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_open_array"}

    def _ome_axes(self) -> list[dict]:
        ome = self.ome or {}
        axes = [dict(a) for a in [*(ome.get("time") or ()), *ome.get("axes", [])]]
        axes = [a for a in axes if a.get("type", "space") in ("time", "space")]
        if self.times + len(self.shape) > len(axes):  # after a time axis, as NGFF orders them
            times = sum(a.get("type") == "time" for a in axes)
            axes.insert(times, {"name": "c", "type": "channel"})
        return axes

    def _axis_names(self) -> list[str]:
        if self.ome is not None:
            return [a["name"] for a in self._ome_axes()]
        return ["c", "z", "y", "x"][4 - len(self.shape) :]


def write_zarr(
    path: str | os.PathLike,
    array: np.ndarray,
    chunks: Sequence[int] | None = None,
    ome: dict | None = None,
    label_image: bool = True,
    zarr_format: int = 3,
) -> Path:
    """Write a whole ``(C?, *spatial)`` array as a zarr array or OME-Zarr image (``ome`` and
    ``zarr_format`` as in :class:`ZarrOutput`), under a temporary name renamed when complete."""
    array = np.asarray(array)
    chunks = chunks or default_chunks(array.shape)
    out = ZarrOutput(path, array.shape, array.dtype, chunks, ome, label_image, {"whole": True},
                     zarr_format)  # fmt: skip
    out.abort()  # a whole write never resumes
    out.open()
    try:
        out.write(tuple(slice(None) for _ in range(array.ndim)), array)
        return out.commit()
    except BaseException:
        out.abort()
        raise


def default_chunks(shape: Sequence[int]) -> tuple[int, ...]:
    """Chunks for a ``(C?, *spatial)`` array: one channel, 64 slices and 256 x 256 in plane (a few
    MB, a common OME-Zarr choice)."""
    spatial = (64, 256, 256)[3 - min(3, len(shape)) :]
    lead = (1,) * (len(shape) - len(spatial))
    return tuple(min(c, s) for c, s in zip((*lead, *spatial), shape, strict=True))


def write_zarr_volume(path: Path, volume: Volume) -> None:
    """Write a :class:`Volume` as ``.ome.zarr`` (NGFF 0.5, with a pyramid) or a plain ``.zarr``
    array, atomically (a temporary directory renamed when complete)."""
    ome = None
    if zarr_suffix(path) == ".ome.zarr":
        spatial = len(volume.spacing)
        # The volume's unit where NGFF names it; none where it has none (none is invented).
        unit = ngff_unit((volume.metadata or {}).get("unit"))
        axes = [{"name": n, "type": "space", **({"unit": unit} if unit else {})}
                for n in "zyx"[3 - spatial :]]  # fmt: skip
        ome = {"version": "0.5", "axes": axes, "scale": volume.spacing, "name": Path(path).name}
    label_image = np.issubdtype(volume.array.dtype, np.integer) or volume.array.dtype == bool
    write_zarr(path, volume.array, ome=ome, label_image=label_image)
