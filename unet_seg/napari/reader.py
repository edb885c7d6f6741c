"""napari reader for the outputs of ``unet-seg-predict`` (TIFF, NIfTI, PNG, zarr, OME-Zarr).

What it opens, and as what:

- ``<stem>_labels.*`` (class indices): a Labels layer coloured as the NGFF ``image-label``
  colours of our OME-Zarr outputs (:func:`~unet_seg.io.zarr.ngff.class_label_mark`);
- ``<stem>_instances.*`` (object ids): a Labels layer; the object table beside it
  (``<stem>_objects.csv``, :mod:`unet_seg.instances.object_table`) becomes the layer's features,
  one row per object (``index`` is the label);
- ``<stem>_probs.*`` (``(K, *spatial)``): one image layer per class, named after the class;
- an OME-Zarr store marked ``image-label`` (a stand-alone labels output, or a group of an
  image's ``labels/``): a Labels layer; an OME-Zarr image: its image and every label image its
  ``labels/`` group lists, all lazy, level by level (a multiscale layer).

Every layer gets the file's spacing as its scale and its unit. Files that are not our outputs
are left to napari's other readers (the reader returns None for them). Reading goes through
:mod:`unet_seg.io`; nothing here parses a format.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.instances.object_table import read_object_table
from unet_seg.io import read_volume
from unet_seg.io.files import SUPPORTED_SUFFIXES, stem
from unet_seg.io.zarr.ngff import class_label_mark
from unet_seg.io.zarr.store import NGFF_UNITS, ZarrVolume, multiscales_of

LayerData = tuple[Any, dict, str]
KINDS = {"_labels": "labels", "_instances": "instances", "_probs": "probabilities"}
# Units as files spell them -> names pint (napari's units) knows.
UNITS = {**NGFF_UNITS, "micron": "micrometer", "\u00b5m": "micrometer", "\u03bcm": "micrometer"}


def output_kind(path: str | os.PathLike) -> str | None:
    """``"labels"``, ``"instances"``, ``"probabilities"``, ``"ome-zarr"`` (any OME-Zarr store:
    an image, a labels output) or None (not for this reader)."""
    path = Path(path)
    if path.is_dir() and _attributes(path) is not None:  # label groups have no suffix
        return "ome-zarr"
    if not path.name.lower().endswith(SUPPORTED_SUFFIXES):  # a plain zarr array goes on
        return None
    name = stem(path)
    for ending, kind in KINDS.items():
        if name.endswith(ending):
            return kind
    return None


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """The npe2 reader hook: :func:`read` for our outputs, None for anything else."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read if output_kind(path) else None


def read(path: str | list[str]) -> list[LayerData]:
    """Layers of ``path`` (see the module docstring)."""
    path = Path(path[0] if isinstance(path, list) else path)
    kind = output_kind(path)
    if kind == "ome-zarr":
        return read_ome_zarr(path)
    if kind is None:
        raise ValueError(f"{path}: not an output of unet-seg-predict")
    volume = read_volume(path)
    meta = geometry(volume.spacing, volume.metadata.get("unit"))
    name = layer_name(path)
    if kind == "probabilities":
        return [probability_layers(volume.array, name, meta)]
    if kind == "labels":
        classes = int(volume.array.max(initial=0)) + 1
        return [
            (volume.array, {**meta, "name": name, "colormap": class_colours(classes)}, "labels")
        ]
    layer = {**meta, "name": name}
    table = path.with_name(f"{stem(path).removesuffix('_instances')}_objects.csv")
    if table.is_file():
        layer["features"] = object_features(table)
    return [(volume.array, layer, "labels")]


def layer_name(path: Path) -> str:
    """The file name without its format suffix (a label group's name as it is)."""
    lower = path.name.lower()
    ending = next((s for s in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True)
                   if lower.endswith(s)), "")  # fmt: skip
    return path.name[: len(path.name) - len(ending)]


def geometry(spacing: tuple[float, ...], unit: str | None, leading: int = 0) -> dict:
    """Layer keywords ``scale`` and ``units`` for ``spacing`` (spatial axes, array order),
    with ``leading`` axes (channels kept in the layer) of scale 1."""
    meta: dict[str, Any] = {"scale": (1.0,) * leading + tuple(float(s) for s in spacing)}
    if unit:
        known = UNITS.get(unit, unit)
        if known in NGFF_UNITS.values():
            meta["units"] = ("pixel",) * leading + (known,) * len(spacing)
    return meta


def class_colours(classes: int) -> dict:
    """A napari label colormap (label -> RGBA in [0, 1]) with the NGFF colours of our class
    maps: background transparent, classes as :func:`~unet_seg.io.zarr.ngff.class_label_mark`."""
    colours = {c["label-value"]: np.asarray(c["rgba"], float) / 255.0
               for c in class_label_mark(max(classes, 2))["colors"]}  # fmt: skip
    return {None: np.array([0.5, 0.5, 0.5, 1.0]), **colours}


def class_names(classes: int) -> list[str]:
    """The names our label outputs give the classes (NGFF ``image-label`` properties)."""
    return [p["class"] for p in class_label_mark(classes)["properties"]]


def probability_layers(
    array: Any, name: str, meta: dict, names: list[str] | None = None
) -> LayerData:
    """``(K, *spatial)`` probabilities (uint8 ``p * 255`` or float) as one image per class."""
    classes = int(array.shape[0])
    names = names or class_names(classes)
    top = 255.0 if np.dtype(array.dtype) == np.uint8 else 1.0
    layer = {
        **meta,
        "name": [f"{name} p({n})" for n in names],
        "channel_axis": 0,
        "contrast_limits": [(0.0, top)] * classes,
        "blending": "additive",
    }
    return (array, layer, "image")


def object_features(table: Path) -> dict[str, np.ndarray]:
    """The object table as napari features: one row per object, ``index`` the label."""
    columns = read_object_table(table)
    if "label" in columns:
        columns = {"index": columns["label"], **columns}
    return columns


def _attributes(path: Path) -> dict | None:
    """The OME attributes of a zarr group (0.5 nests them under ``ome``), None if it is not an
    OME-Zarr group."""
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception:  # not a zarr store we can open: leave it to other readers
        return None
    if not isinstance(node, zarr.Group):
        return None
    attrs = dict(node.attrs)
    attrs = {**attrs, **dict(attrs.get("ome", {}))}
    return attrs if multiscales_of(attrs) is not None or "labels" in attrs else None


def _pyramid(path: Path) -> tuple[list[Any], ZarrVolume]:
    """Every level of an OME-Zarr image as a lazy dask array, and level 0's volume."""
    import dask.array as da

    first = ZarrVolume(path, 0)
    levels = [first] + [ZarrVolume(path, k) for k in range(1, first.metadata["ome"]["levels"])]
    arrays = [da.from_array(v, chunks=v.metadata["chunks"], asarray=True, fancy=False)
              for v in levels]  # fmt: skip
    return arrays, first


def read_ome_zarr(path: Path) -> list[LayerData]:
    """An OME-Zarr store: a label image as Labels; an image as an image layer plus its labels."""
    attrs = _attributes(path) or {}
    layers: list[LayerData] = []
    if multiscales_of(attrs) is not None:
        arrays, first = _pyramid(path)
        channels = len(first.shape) - len(first.spacing)
        meta = geometry(first.spacing, first.metadata.get("unit"), channels)
        name = layer_name(path)
        data = arrays if len(arrays) > 1 else arrays[0]
        if "image-label" in attrs:
            colours = {c["label-value"]: np.asarray(c["rgba"], float) / 255.0
                       for c in attrs["image-label"].get("colors", [])}  # fmt: skip
            layer = {**meta, "name": name, "multiscale": len(arrays) > 1}
            if colours:
                layer["colormap"] = {None: np.array([0.5, 0.5, 0.5, 1.0]), **colours}
            return [(data, layer, "labels")]
        if channels and layer_name(path).endswith("_probs"):
            meta["scale"] = meta["scale"][1:]
            meta.get("units") and meta.update(units=meta["units"][1:])
            names = [c.get("label") for c in attrs.get("omero", {}).get("channels", [])]
            names = names if len(names) == first.shape[0] and all(names) else None
            layers.append(probability_layers(data, name, meta, names))
            layers[-1][1]["multiscale"] = len(arrays) > 1
        else:
            layers.append((data, {**meta, "name": name, "multiscale": len(arrays) > 1}, "image"))
    listed = (_attributes(path / "labels") or {}) if (path / "labels").is_dir() else {}
    for label in listed.get("labels", []):
        layers += read_ome_zarr(path / "labels" / str(label))
    return layers
