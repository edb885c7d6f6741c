"""Converting TIFF stacks, NIfTI volumes and folders of 2D slices to OME-Zarr, in bounded memory.

The source is read lazily, one chunk row at a time (``(chunk z, chunk y, X)`` voxels), written
into a resumable :class:`~unet_seg.io.zarr.output.ZarrOutput` that gets a pyramid and the NGFF
metadata (axes, units, the source's spacing as the ``scale``) and is renamed when complete.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unet_seg.errors import OutputWriteError
from unet_seg.io.files import find_files, is_directory_format
from unet_seg.io.lazy import LazyVolume
from unet_seg.io.tiff import output_axes
from unet_seg.io.volumes import open_volume, read_volume
from unet_seg.io.zarr.output import ZarrOutput, default_chunks
from unet_seg.io.zarr.store import NGFF_VERSIONS, ngff_unit


class SliceFolder(LazyVolume):
    """A folder of 2D images (sorted by name) seen as a ``(z, y, x)`` stack, one file per slice."""

    def __init__(self, folder: Path) -> None:
        self.files = find_files(folder)
        first = open_volume(self.files[0])
        if first.ndim != 2:
            raise ValueError(f"{self.files[0]}: a slice of a stack must be 2D, got {first.shape}")
        spacing = (1.0, *first.spacing[-2:])
        affine = np.diag([spacing[2], spacing[1], 1.0, 1.0])
        shape = (len(self.files), *first.shape)
        super().__init__(folder, shape, first.dtype, spacing, affine, dict(first.metadata))

    def _read(self, index: tuple) -> np.ndarray:
        z, rest = index[0], index[1:]
        if isinstance(z, int | np.integer):
            return read_volume(self.files[z]).array[rest]
        planes = [read_volume(self.files[i]).array[rest] for i in range(self.shape[0])[z]]
        for path, plane in zip(self.files, planes, strict=False):
            if plane.shape != planes[0].shape:
                raise ValueError(f"{path}: slice shape {plane.shape} differs from the first")
        return np.stack(planes)


def open_source(path: str | os.PathLike) -> LazyVolume:
    """A file (TIFF, NIfTI, PNG, zarr) or a folder of 2D slices, opened lazily."""
    path = Path(path)
    if path.is_dir() and not is_directory_format(path):
        return SliceFolder(path)
    return open_volume(path)


def convert_to_ome_zarr(
    source: str | os.PathLike,
    target: str | os.PathLike,
    chunks: Sequence[int] | None = None,
    version: str = "0.5",
    progress: bool | None = None,
) -> Path:
    """Write ``source`` as an OME-Zarr image at ``target`` (``.ome.zarr``); returns ``target``.

    ``chunks``: of the ``(C?, z?, y, x)`` array (default: one channel, 64 slices, 256 x 256).
    An interrupted conversion resumes at the chunk row it stopped at. ``progress``: a bar over
    the chunk rows (None: on a terminal only).
    """
    target = Path(target)
    if not target.name.lower().endswith(".ome.zarr"):
        raise ValueError(f"{target}: the output of a conversion must end with .ome.zarr")
    if str(version) not in NGFF_VERSIONS:
        raise ValueError(f"ngff_version must be one of {', '.join(NGFF_VERSIONS)}, got {version!r}")
    if chunks is not None and any(int(c) < 1 for c in chunks):
        raise ValueError(f"chunks must be positive sizes, got {list(chunks)}")
    volume = open_source(source)
    spatial = len(volume.spacing)
    # The source's axes and unit, none invented: a stack of time points keeps a time axis.
    unit = ngff_unit((volume.metadata or {}).get("unit"))
    space = {"type": "space", **({"unit": unit} if unit else {})}
    axes = [{"name": "t", "type": "time"} if letter == "T" else {"name": letter.lower(), **space}
            for letter in output_axes(volume.metadata, spatial)]  # fmt: skip
    name = Path(source).name
    ome = {"version": version, "axes": axes, "scale": volume.spacing, "name": name}
    ome.update(_time_axis(volume.metadata or {}, volume.ndim - spatial, axes))
    chunks = tuple(chunks) if chunks else default_chunks(volume.shape)
    if len(chunks) != volume.ndim:
        raise ValueError(f"chunks {chunks} do not fit an array of shape {volume.shape}")
    key = {"source": str(Path(source).resolve()), "shape": list(volume.shape), "chunks": chunks}
    out = ZarrOutput(target, volume.shape, volume.dtype, chunks, ome, label_image=False,
                     fingerprint=key, zarr_format=3)  # fmt: skip
    done = out.open()
    try:
        _convert_rows(volume, out, chunks, done, progress)
        return out.commit()
    except OutputWriteError as err:  # a full disk: what is written stays, to resume with room
        raise OutputWriteError(
            err.errno, f"{err}; the converted part is kept in {out.partial}, rerun to resume"
        ) from err


# NIfTI's time units (nibabel's names) -> NGFF's
_TIME_UNITS = {"sec": "second", "msec": "millisecond", "usec": "microsecond"}


def _time_axis(metadata: dict, lead: int, axes: list[dict]) -> dict:
    """A source's time axis (``metadata["time_axis"]``: a NIfTI's 4th axis that is time) as an
    NGFF ``t`` with its unit and step: in front of ``axes`` where the array has it (``lead``
    axes before the space axes), else as a length-1 axis the store adds (``{"time": [t]}``,
    see :class:`~unet_seg.io.zarr.output.ZarrOutput`). ``{}`` without one."""
    time = metadata.get("time_axis")
    if time is None:
        return {}
    unit = _TIME_UNITS.get(time.get("unit"))
    axis = {"name": "t", "type": "time", **({"unit": unit} if unit else {}),
            "scale": float(time["step"])}  # fmt: skip
    if metadata.get("nifti_time") is not None:
        return {"time": [axis]}
    if lead == 1:
        axes.insert(0, axis)
    return {}


def _convert_rows(
    volume: LazyVolume, out: ZarrOutput, chunks: Sequence[int], done: set, progress: bool | None
) -> None:
    # Rows of chunks over every axis but x: memory is one row, whatever the volume's size.
    grid = [range(0, s, c) for s, c in zip(volume.shape[:-1], chunks[:-1], strict=True)]
    counts = [len(g) for g in grid]
    bar = tqdm(enumerate(np.ndindex(*counts)), total=int(np.prod(counts)), desc="convert",
               unit="row", disable=None if progress is None else not progress)  # fmt: skip
    for row, starts in bar:
        if row in done:
            continue
        box = tuple(
            slice(g[i], min(g[i] + c, s))
            for g, i, c, s in zip(grid, starts, chunks, volume.shape, strict=False)
        )
        out.write((*box, slice(None)), volume[(*box, slice(None))])
        out.record(row, {"box": [[b.start, b.stop] for b in box]})
