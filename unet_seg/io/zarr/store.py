"""Zarr and OME-Zarr: plain zarr arrays (format 2 and 3) and OME-NGFF images (0.4 and 0.5).

A ``.zarr`` / ``.ome.zarr`` directory is either an array or an OME-Zarr image group. Images are
read at one resolution level (``level=0``: full resolution); their ``axes`` and the level's
``scale`` transform give the spacing and unit. Arrays are seen in the project's order: a
channel axis (NGFF ``c``) first, then ``(z, y, x)``; a time axis must have length 1 and is
read past (``metadata["ome"]["time"]`` keeps it, with its step, for the outputs).
:class:`ZarrVolume` reads only the chunks an index touches, so any volume size works.

Writing whole volumes (:func:`write_zarr`) goes through a temporary directory renamed when
complete; block-wise outputs are in :mod:`unet_seg.io.zarr.output`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.io.lazy import LazyVolume
from unet_seg.io.limits import check_memory, declared_bytes
from unet_seg.io.volume import Volume

ZARR_SUFFIXES = (".ome.zarr", ".zarr")
# NGFF units <-> the short units TIFF/NIfTI metadata use.
_UNITS = {"micrometer": "um", "nanometer": "nm", "millimeter": "mm", "meter": "m"}
NGFF_UNITS = {short: long for long, short in _UNITS.items()}
# How TIFF metadata spell a micrometre besides "um" (ImageJ writes the escape as text).
_MICRONS = ("\u00b5m", "\u03bcm", "\\u00B5m", "micron", "microns", "micrometer")


def ngff_unit(unit: str | None) -> str | None:
    """The NGFF name of a file's spatial ``unit`` (``"nm"`` -> ``"nanometer"``); None where the
    file has none, or one NGFF has no name for (``"pixel"``): a unit is never invented."""
    if not unit:
        return None
    if unit in _MICRONS:
        return "micrometer"
    return NGFF_UNITS.get(unit, unit if unit in _UNITS else None)


_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def is_zarr(path: str | os.PathLike) -> bool:
    """True for ``.zarr`` / ``.ome.zarr`` paths (directories; the name decides)."""
    return str(path).rstrip("/").lower().endswith(ZARR_SUFFIXES)


def zarr_suffix(path: str | os.PathLike) -> str:
    name = str(path).rstrip("/").lower()
    for suffix in ZARR_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"{path}: not a zarr path (use {' or '.join(ZARR_SUFFIXES)})")


NGFF_VERSIONS = ("0.4", "0.5")  # what the outputs can be written as


def multiscales_of(attrs: dict) -> tuple[str, list[dict]] | None:
    """``(version, multiscales)`` of a group's attributes (NGFF 0.4 top level, 0.5 under
    ``ome``), or None for a group that is no OME-Zarr image.

    The version is one of ``NGFF_VERSIONS``: where the declared one is missing, damaged (null, a
    number) or older (0.1-0.3, laid out as 0.4), the layout decides, so an output written in the
    input's version is always one the writer and its validation know."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and ome.get("multiscales"):
        return _known(ome.get("version"), "0.5"), list(ome["multiscales"])
    if attrs.get("multiscales"):
        scales = list(attrs["multiscales"])
        first = scales[0] if isinstance(scales[0], dict) else {}
        return _known(first.get("version"), "0.4"), scales
    return None


def _known(declared: object, layout: str) -> str:
    return declared if declared in NGFF_VERSIONS else layout


def _scale_of(transforms: Sequence[dict] | None, ndim: int) -> list[float]:
    scale = [1.0] * ndim
    for t in transforms or ():
        if t.get("type") == "scale" and "scale" in t:
            scale = [a * float(b) for a, b in zip(scale, t["scale"], strict=True)]
    return scale


def _affine(spacing: Sequence[float]) -> np.ndarray:
    """4x4 voxel -> world matrix acting on ``(x, y, z, 1)`` (the NIfTI convention)."""
    diag = [*reversed(tuple(spacing)[-3:]), *([1.0] * (3 - min(3, len(spacing))))]
    return np.diag([*diag, 1.0])


class ZarrVolume(LazyVolume):
    """A zarr array or one level of an OME-Zarr image, read lazily by chunk.

    ``shape``: channel axis first if any, then ``(z, y, x)`` or ``(y, x)``; ``spacing``: of the
    level's spatial axes; ``metadata``: ``unit``, ``axes`` (such as ``"CZYX"``), ``chunks``,
    ``zarr_format`` and, for OME-Zarr, ``ome`` (version, axes, name, levels) for writing outputs
    alike. Pickles without its open array (Dask workers reopen it).
    """

    def __init__(self, path: str | os.PathLike, level: int = 0) -> None:
        self.level = int(level)
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such zarr array or OME-Zarr image")
        self.path = path
        try:
            array = self._open()
        except Exception as err:  # zarr raises many types; all mean the store is unusable
            if isinstance(err, ValueError) and str(err).startswith(f"{path}: "):
                raise  # our own checks name the store and the problem (zarr's may hold a URL)
            reason = _first_line(err)
            raise ValueError(f"{path}: cannot open as zarr, corrupt metadata? ({reason})") from err
        super().__init__(path, self.shape, self.dtype, self.spacing, self.affine, self.metadata)
        self._handle = array

    def _open(self):
        """Open the array (and read its metadata into the attributes); returns the array."""
        import zarr

        from unet_seg.io.zarr.codecs import install

        install()  # blosc headers are checked before their declared size is allocated
        node = zarr.open(store=str(self.path), mode="r")
        ome = None
        if isinstance(node, zarr.Group):
            found = multiscales_of(dict(node.attrs))
            if found is None:
                raise ValueError(
                    f"{self.path}: a zarr group without OME-NGFF multiscales metadata; give the "
                    f"path of one of its arrays ({', '.join(sorted(node.array_keys())) or 'none'})"
                )
            version, scales = found
            ms = scales[0]
            datasets = ms["datasets"]
            if not 0 <= self.level < len(datasets):
                raise ValueError(
                    f"{self.path}: input_level {self.level} does not exist (levels 0.."
                    f"{len(datasets) - 1})"
                )
            array = node[datasets[self.level]["path"]]
            axes = self._checked_axes(ms.get("axes"))
            if len(axes) != array.ndim:
                raise ValueError(f"{self.path}: {len(axes)} axes for a {array.ndim}-d array")
            scale = _scale_of(datasets[self.level].get("coordinateTransformations"), array.ndim)
            glob = _scale_of(ms.get("coordinateTransformations"), array.ndim)
            scale = [a * b for a, b in zip(scale, glob, strict=True)]
            name = ms.get("name")
            ome = {
                "version": version,
                "axes": axes,
                "name": name if isinstance(name, str) else None,  # only a label: not checked
                "levels": len(datasets),
            }
        else:
            array, axes = node, None
        self.zarr_format = int(array.metadata.zarr_format)
        names = [a["name"] for a in axes] if axes else self._default_axes(array.ndim)
        types = [(a.get("type") if axes else None) or _AXIS_TYPES.get(n) for a, n in
                 zip(axes or [{}] * len(names), names, strict=True)]  # fmt: skip
        lead: list[Any] = []
        for name, kind, size in zip(names, types, array.shape, strict=True):
            if kind == "time" or name == "t":
                if size != 1:
                    raise ValueError(f"{self.path}: a time axis of length {size} (need 1)")
                lead.append(0)
        self._lead = tuple(lead)
        keep = [i for i in range(array.ndim) if i >= len(lead)]
        self.shape = tuple(int(array.shape[i]) for i in keep)
        self.dtype = np.dtype(array.dtype)
        self._check_array(array)
        space = [i for i in keep if types[i] == "space"]
        if not 2 <= len(space) <= 3 or len(keep) - len(space) > 1 or keep[-len(space)] != space[0]:
            raise ValueError(
                f"{self.path}: axes {names} are not (c?, z?, y, x): need 2 or 3 space axes last"
            )
        self.spacing = tuple(float(scale[i]) for i in space) if ome else (1.0,) * len(space)
        if not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"{self.path}: scale {list(self.spacing)} of the space axes must be "
                             "positive numbers")  # fmt: skip
        units = {a.get("unit") for i, a in enumerate(axes or []) if i in space} - {None}
        unit = units.pop() if len(units) == 1 else None
        self.affine = _affine(self.spacing)
        self.metadata: dict[str, Any] = {
            "axes": ("C" if len(keep) > len(space) else "") + "ZYX"[3 - len(space) :],
            "unit": _UNITS.get(unit, unit) if unit else None,
            "chunks": tuple(int(array.chunks[i]) for i in keep),
            "zarr_format": self.zarr_format,
        }
        if ome:
            # A time axis of length 1 is read past, not lost: outputs write it back (with its
            # unit and step) as the input has it.
            time = [{**axes[i], "scale": float(scale[i])} for i in range(len(lead))]
            self.metadata["ome"] = {**ome, "axes": [axes[i] for i in keep], "scale": self.spacing,
                                    "time": time}  # fmt: skip
        return array

    def _checked_axes(self, axes: Any) -> list[dict]:
        """NGFF ``axes`` as dicts; ``ValueError`` unless each has a name of its own and a type
        and unit that are strings (outputs copy them, so nonsense must stop here)."""
        if not isinstance(axes, list):
            raise ValueError(f"{self.path}: multiscales axes {axes!r} are not a list")
        axes = [a if isinstance(a, dict) else {"name": a} for a in axes]
        for axis in axes:
            if axis.get("type") is None and axis.get("name") in _AXIS_TYPES:  # optional in NGFF
                axis["type"] = _AXIS_TYPES[axis["name"]]
            if not isinstance(axis.get("name"), str) or not axis["name"]:
                raise ValueError(f"{self.path}: axis {axis!r} has no name")
            if any(not isinstance(axis.get(k), str | None) for k in ("type", "unit")):
                raise ValueError(f"{self.path}: axis {axis!r}: type and unit must be strings")
        names = [a["name"] for a in axes]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.path}: axis names {names} are not unique")
        return axes

    def _check_array(self, array) -> None:
        """Refuse what no reader should try: no voxels, a dtype that is no number, chunks that
        one read could not hold (a hostile header can declare any of them)."""
        if min(self.shape, default=0) < 1:
            raise ValueError(f"{self.path}: the array has no voxels (shape {self.shape})")
        if self.dtype.kind not in "biuf":
            raise ValueError(f"{self.path}: data type {self.dtype} is not a number type")
        chunk = declared_bytes(array.chunks, self.dtype)
        check_memory(self.path, chunk, f"one chunk {tuple(array.chunks)}")

    @staticmethod
    def _default_axes(ndim: int) -> list[str]:
        if not 2 <= ndim <= 4:
            raise ValueError(f"a zarr array with {ndim} axes (need 2 to 4: c?, z?, y, x)")
        return ["c", "z", "y", "x"][4 - ndim :]

    @property
    def chunks(self) -> tuple[int, ...]:
        return self.metadata["chunks"]

    def _read(self, index: tuple) -> np.ndarray:
        size = [len(range(*i.indices(n))) if isinstance(i, slice) else 1
                for i, n in zip(index, self.shape, strict=True)]  # fmt: skip
        check_memory(self.path, declared_bytes(size, self.dtype), f"reading {tuple(size)} voxels")
        try:
            if self._handle is None:
                self._handle = self._open()
            return np.asarray(self._handle[(*self._lead, *index)])
        except Exception as err:  # codecs raise many types; all mean a chunk is unusable
            raise ValueError(
                f"{self.path}: cannot read region {index!r}, corrupt or truncated? "
                f"({_first_line(err)})"
            ) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def read_zarr(path: Path) -> Volume:
    """The whole array (level 0 of an OME-Zarr image) as a :class:`Volume`."""
    volume = ZarrVolume(path)
    return Volume(volume[...], volume.affine, volume.spacing, volume.metadata, path)


def open_zarr(path: str | os.PathLike, level: int = 0) -> ZarrVolume:
    """Open a zarr array or an OME-Zarr image at resolution ``level`` for lazy reads."""
    return ZarrVolume(path, level)
