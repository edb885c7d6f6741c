"""TIFF through tifffile: read, open lazily, write whole or as a memory-mapped slab target.

Pages are z-slices. Spacing comes from ImageJ metadata (``spacing`` = z step, X/YResolution =
pixels per unit), OME ``PhysicalSize{X,Y,Z}``, or tifffile's JSON description, and is written back
as ImageJ resolution/spacing, or, for dtypes and layouts ImageJ cannot hold (int64 labels,
float16, channels first), as tifffile's JSON description with ``spacing``/``unit``/``axes``.
Samples (RGB, RGBA, grey + alpha) and ImageJ/OME channel axes become a leading channel axis, and
``metadata["channels"]`` says which (:mod:`unet_seg.io.colour`). Before any data are read, the
page offsets and byte counts are checked against the file's size (:mod:`unet_seg.io.limits`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from unet_seg.io.colour import channel_kind
from unet_seg.io.lazy import LazyVolume
from unet_seg.io.limits import check_deflated, check_stored, declared_bytes
from unet_seg.io.volume import Volume, affine_from_spacing

log = logging.getLogger(__name__)
_DEFLATE = (8, 32946)  # ADOBE_DEFLATE and the old DEFLATE code
_WARNED_SERIES: set[str] = set()  # files whose other series were reported (once per process)

IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)


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


def check_tiff_data(tif: tifffile.TiffFile) -> None:
    """``ValueError`` if the pages' data lie beyond the end of the file, or uncompressed pages
    hold fewer bytes than their shape needs, or deflated pages more than they can hold."""
    path, size = tif.filehandle.path, tif.filehandle.size
    series = tif.series[0]
    packed = int(tif.pages[0].bitspersample) % 8 != 0  # bits, not bytes, per sample
    if series.dataoffset is not None and not packed:  # one contiguous block (ImageJ stacks)
        check_stored(path, series.dataoffset + series.nbytes, size, "image data")
        return
    for page in tif.pages:
        key = page.keyframe
        stored = 0
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
            check_stored(path, int(offset) + int(count), size, "image data")
            stored += int(count)
        needed = page_bytes(key)
        if key.compression == 1:
            check_stored(path, needed, stored, "uncompressed pixels in a page")
        elif key.compression in _DEFLATE:
            check_deflated(path, needed, stored)


def page_bytes(page: tifffile.TiffPage | tifffile.TiffFrame) -> int:
    """Bytes the pixels of one page take on disk uncompressed: rows are padded to whole bytes,
    so bit-packed pages (1-bit masks, 4- or 12-bit data) need fewer than their decoded array."""
    bits = int(page.bitspersample)
    if bits == 8 * np.dtype(page.dtype).itemsize:
        return declared_bytes(page.shape, page.dtype)
    samples = int(page.samplesperpixel)
    rows = int(page.imagedepth) * int(page.imagelength)
    if int(page.planarconfig) == 2:  # PLANARCONFIG.SEPARATE: one plane a sample
        return samples * rows * -(-int(page.imagewidth) * bits // 8)
    return rows * -(-int(page.imagewidth) * samples * bits // 8)


def tiff_layout(tif: tifffile.TiffFile) -> tuple[tuple[int, ...], np.dtype, str, int | None]:
    """``(shape, dtype, axes, moved)`` of the first series with its samples (``S``: RGB(A),
    grey + alpha) or channel axis (``C``: ImageJ, OME) first as ``C``; ``moved`` is the axis it
    came from (None: no channel axis). Checks the data sizes first (:func:`check_tiff_data`)."""
    check_tiff_data(tif)
    series = tif.series[0]
    axes, shape = series.axes, tuple(series.shape)
    _report_other_series(tif)
    letter = next((a for a in ("S", "C") if a in axes), None)
    if letter is None:
        return shape, np.dtype(series.dtype), axes, None
    at = axes.index(letter)
    axes = "C" + axes[:at] + axes[at + 1 :]
    shape = (shape[at], *shape[:at], *shape[at + 1 :])
    return shape, np.dtype(series.dtype), axes, at


def _report_other_series(tif: tifffile.TiffFile) -> None:
    """Warn (once per file) that only the first of several image series is read: multi-position
    OME-TIFFs and slide scans (label, macro images) hold more than one."""
    path = str(tif.filehandle.path)
    if len(tif.series) < 2 or path in _WARNED_SERIES:
        return
    _WARNED_SERIES.add(path)
    others = ", ".join(f"{s.axes} {tuple(s.shape)}" for s in tif.series[1:4])
    more = f" and {len(tif.series) - 4} more" if len(tif.series) > 4 else ""
    first = tif.series[0]
    log.warning("%s: %d image series; reading the first (%s %s), not %s%s: save another as its "
                "own file to use it", path, len(tif.series), first.axes,
                tuple(first.shape), others, more)  # fmt: skip


def _channel_meta(tif: tifffile.TiffFile, shape: tuple[int, ...], moved: int | None) -> dict:
    if moved is None:
        return {}
    page = tif.pages[0]
    samples = "S" in tif.series[0].axes
    rgb = samples and int(page.photometric) == 2  # PHOTOMETRIC.RGB
    return {"channels": channel_kind(shape[0], rgb=rgb, samples=samples)}


def _spatial_axes(shape: tuple[int, ...], axes: str) -> int:
    return min(3, len(shape)) - (1 if axes.startswith("C") and len(shape) == 3 else 0)


def read_tiff(path: Path) -> Volume:
    with tifffile.TiffFile(path) as tif:
        shape, _, axes, moved = tiff_layout(tif)
        array = tif.series[0].asarray()
        if moved:
            array = np.moveaxis(array, moved, 0)
        spacing, meta = tiff_spacing(tif, _spatial_axes(shape, axes))
        meta.update(_channel_meta(tif, shape, moved))
    meta["axes"] = axes
    return Volume(array, spacing=spacing, metadata=meta, path=path)


class TiffVolume(LazyVolume):
    """Lazy TIFF: uncompressed files through ``tifffile.memmap``, compressed stacks page by page
    (z-slices), anything else read whole on first access."""

    def __init__(self, path: Path) -> None:
        with tifffile.TiffFile(path) as tif:
            shape, dtype, axes, moved = tiff_layout(tif)
            spacing, meta = tiff_spacing(tif, _spatial_axes(shape, axes))
            meta.update(_channel_meta(tif, shape, moved))
            meta["axes"] = axes
            contiguous = tif.series[0].dataoffset is not None and not moved
            paged = (
                len(shape) == 3 and len(tif.pages) == shape[0] and tif.pages[0].shape == shape[1:]
            )
        super().__init__(path, shape, dtype, spacing, affine_from_spacing(spacing), meta)
        self._mode = "memmap" if contiguous else "pages" if paged else "eager"
        self.reads_whole = self._mode == "eager"

    def _read(self, index: tuple) -> np.ndarray:
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
            self._handle = read_tiff(self.path).array
        return np.array(self._handle[index])


def output_axes(metadata: dict | None, spatial: int) -> str:
    """The letters of an output's ``spatial`` trailing axes, as its input (``metadata``) has
    them: a stack of time points stays ``TYX``, never becomes ``ZYX``; ``ZYX``'s letters where
    the input's are none that ImageJ knows (tifffile's ``Q``, ``I``)."""
    axes = str((metadata or {}).get("axes") or "")[-spatial:] if spatial else ""
    known = len(axes) == spatial and axes.endswith("YX"[-spatial:]) and len(set(axes)) == spatial
    return axes if known and set(axes) <= set("TZYX") else "ZYX"[3 - spatial :]


def write_options(
    ndim: int,
    dtype: np.dtype,
    spacing: tuple[float, ...],
    unit: str | None,
    axes: str | None = None,
) -> dict[str, Any]:
    """tifffile keyword arguments that store ``spacing`` (the trailing spatial axes, array order;
    their letters ``axes``, default ``ZYX``'s) for an array of ``ndim`` axes: ImageJ where it
    can hold the data, else tifffile's JSON. No ``unit``: none is written (none is invented)."""
    spatial = len(spacing)
    axes = axes or "ZYX"[3 - spatial :]
    resolution = (1.0 / spacing[-1], 1.0 / spacing[-2]) if spatial >= 2 else None
    unit_meta = {"unit": unit} if unit else {}
    if np.dtype(dtype).type in IMAGEJ_DTYPES and ndim == spatial <= 3:
        meta: dict[str, Any] = {"axes": axes, **unit_meta}
        if spatial == 3 and "Z" in axes:
            meta["spacing"] = spacing[0]
        return {"imagej": True, "resolution": resolution, "metadata": meta}
    meta = {"spacing": list(spacing), **unit_meta}
    if spatial <= 3 and ndim >= spatial:
        meta["axes"] = "C" * (ndim - spatial) + axes
    return {"resolution": resolution, "photometric": "minisblack", "metadata": meta}


def write_tiff(tmp: Path, volume: Volume) -> None:
    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    axes = output_axes(volume.metadata, len(volume.spacing))
    options = write_options(
        array.ndim, array.dtype, volume.spacing, volume.metadata.get("unit"), axes
    )
    tifffile.imwrite(tmp, array, compression="zlib", **options)


def create_empty(
    tmp: Path,
    shape: tuple[int, ...],
    dtype: np.dtype,
    spacing: tuple[float, ...],
    unit: str | None,
    axes: str | None = None,
) -> int:
    """Create an uncompressed TIFF at ``tmp`` of ``shape`` (``spacing``: its spatial axes, whose
    letters are ``axes``) with its image data contiguous and unwritten; returns the byte offset
    of the data."""
    options = write_options(len(shape), dtype, spacing, unit, axes)
    mapped = tifffile.memmap(tmp, shape=shape, dtype=dtype, **options)
    offset = int(mapped.offset)
    del mapped  # only the layout is wanted: the data are written with pwrite
    return offset
