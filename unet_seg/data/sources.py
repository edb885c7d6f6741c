"""From files to training regions: pairing images with labels, mapping label values to classes,
normalising, splitting train/val by file or by slice, and the per-region weight maps.

A *region* is what patches are cut from: a 2D image, one slice of a stack (``spatial_dims: 2``),
or a 3D volume or a z-range of one (``spatial_dims: 3``).
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.data.io import SUPPORTED_SUFFIXES, check_pair, read_volume

PathSpec = str | Path | Sequence[str | Path]


@dataclass
class Region:
    """One image to cut patches from.

    Attributes:
        image: ``(C, *spatial)`` float32, normalised by the percentiles of its whole file.
        label: ``(*spatial)`` int64 class indices (``ignore_index`` marks voxels to ignore).
        weight: ``(*spatial)`` float32 weight map, or None (ones).
        name: file stem plus the slice or z-range it covers.
        instances: ``(*spatial)`` instance ids for the weight map, or None.
        spacing: voxel size per spatial axis.
    """

    image: np.ndarray
    label: np.ndarray
    weight: np.ndarray | None
    name: str
    instances: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.label.shape


def stem(path: Path) -> str:
    """File name without its format suffix (``a.nii.gz`` -> ``a``)."""
    name = path.name
    for suffix in SUPPORTED_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def list_files(spec: PathSpec) -> list[Path]:
    """Files named by ``spec``: a file, a folder (its supported files, sorted), a glob pattern, or
    a list of these. ``FileNotFoundError`` if something named matches nothing."""
    if isinstance(spec, str | Path):
        spec = [spec]
    files: list[Path] = []
    for item in spec:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and stem(p) != p.name)
            found = [p for p in found if not p.name.startswith(".")]  # skips partial writes
        elif any(c in str(item) for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(item)))
        else:
            found = [path] if path.is_file() else []
        if not found:
            raise FileNotFoundError(f"{item}: no image files found (a file, folder or glob)")
        files += found
    return files


def pair_files(images: PathSpec, labels: PathSpec) -> list[tuple[Path, Path]]:
    """Images and labels matched by file stem (one file each also pairs, whatever the names)."""
    image_files, label_files = list_files(images), list_files(labels)
    if len(image_files) == len(label_files) == 1:
        return [(image_files[0], label_files[0])]
    by_stem = {stem(p): p for p in label_files}
    pairs = []
    for image in image_files:
        if stem(image) not in by_stem:
            raise ValueError(f"{image}: no label file named {stem(image)}.* in {labels}")
        pairs.append((image, by_stem[stem(image)]))
    return pairs


def map_labels(
    label: np.ndarray, label_map: Mapping[Any, int] | None, path: Path | str
) -> np.ndarray:
    """Stored label values -> class indices via ``label_map`` (e.g. ISBI ``{255: 0, 0: 1}``).

    Returns int64 like ``label``. ``ValueError`` naming ``path`` for values the map does not cover.
    """
    if label_map is None:
        return label.astype(np.int64)
    out = np.full(label.shape, np.iinfo(np.int64).min, np.int64)
    for raw, cls in label_map.items():
        out[label == (float(raw) if isinstance(raw, str) else raw)] = int(cls)
    unmapped = np.unique(label[out == np.iinfo(np.int64).min])
    if unmapped.size:
        raise ValueError(
            f"{path}: label values {unmapped[:10].tolist()} are not in label_map {dict(label_map)}"
        )
    return out


def read_pair(
    image_path: Path,
    label_path: Path,
    spatial_dims: int,
    num_classes: int,
    label_map: Mapping[Any, int] | None = None,
    ignore_index: int | None = -1,
    normalization: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read and check one pair; returns image ``(C, *shape)`` float32 normalised, label
    ``(*shape)`` int64 and the spacing. ``shape`` has ``spatial_dims`` axes, or 3 for a stack of
    2D slices when ``spatial_dims`` is 2."""
    from unet_seg.data.transforms import normalize_percentile

    label_ndims = (2, 3) if spatial_dims == 2 else (3,)
    label_volume = read_volume(label_path, ndim=label_ndims)
    label = map_labels(label_volume.array, label_map, label_path)
    image_volume = read_volume(image_path, ndim=(label.ndim, label.ndim + 1))
    image = image_volume.array
    if image.ndim == label.ndim:
        image = image[None]
    check_pair(image, label, num_classes, label_path, ignore_index, spatial_dims=label.ndim)
    norm = {"low": 1.0, "high": 99.8, **(normalization or {})}
    image = normalize_percentile(image, norm["low"], norm["high"])
    spacing = image_volume.spacing[-label.ndim :]
    spacing = (1.0,) * (label.ndim - len(spacing)) + tuple(spacing)
    return image, label, spacing


def z_ranges(depth: int, val_slices: Sequence[int] | None, role: str) -> list[range]:
    """The z-ranges of a volume of ``depth`` slices that belong to ``role`` ("train" or "val"),
    given the validation slices ``[start, stop)`` (None: the whole volume serves ``role``)."""
    if val_slices is None:
        return [range(depth)]
    start, stop = (int(v) for v in val_slices)
    if not 0 <= start < stop <= depth:
        raise ValueError(f"val_slices {list(val_slices)} must lie within 0..{depth} slices")
    if role == "val":
        return [range(start, stop)]
    return [r for r in (range(0, start), range(stop, depth)) if len(r)]


def build_regions(
    pairs: Sequence[tuple[Path, Path]],
    spatial_dims: int,
    num_classes: int,
    role: str,
    val_slices: Sequence[int] | None = None,
    instances: Sequence[Path | None] | None = None,
    **read_kwargs: Any,
) -> list[Region]:
    """Load ``pairs`` and cut them into regions for ``role`` ("train"/"val"): whole 2D images, or
    the slices (2D) / z-ranges (3D) of each volume that ``val_slices`` assigns to ``role``."""
    regions: list[Region] = []
    for k, (image_path, label_path) in enumerate(pairs):
        image, label, spacing = read_pair(
            image_path, label_path, spatial_dims, num_classes, **read_kwargs
        )
        inst = None
        if instances is not None and instances[k] is not None:
            inst = read_volume(instances[k], ndim=label.ndim).array.astype(np.int64)
            if inst.shape != label.shape:
                raise ValueError(
                    f"{instances[k]}: instance shape {inst.shape} does not match "
                    f"label shape {label.shape} of {label_path}"
                )
        name = stem(image_path)
        if label.ndim == spatial_dims:  # a 2D image, or a 3D volume for a 3D model
            if label.ndim == 2 and val_slices is not None:
                raise ValueError(f"{image_path}: val_slices needs a stack, this is a 2D image")
            for zr in z_ranges(label.shape[0], val_slices if label.ndim == 3 else None, role):
                part = slice(zr.start, zr.stop) if label.ndim == 3 else slice(None)
                suffix = f"[{zr.start}:{zr.stop}]" if val_slices is not None else ""
                regions.append(
                    Region(
                        image[:, part],
                        label[part],
                        None,
                        name + suffix,
                        None if inst is None else inst[part],
                        spacing,
                    )
                )
        else:  # a stack seen by a 2D model: one region per slice
            for z in (z for zr in z_ranges(label.shape[0], val_slices, role) for z in zr):
                regions.append(
                    Region(
                        image[:, z],
                        label[z],
                        None,
                        f"{name}[{z}]",
                        None if inst is None else inst[z],
                        spacing[1:],
                    )
                )
    return regions


def add_weight_maps(regions: Sequence[Region], weight_map: Mapping[str, Any] | None) -> None:
    """Each region's weight map, computed once: ``unet_weight_map(label, **weight_map)``."""
    if not weight_map:
        return
    from unet_seg.data.weightmap import unet_weight_map

    for region in regions:
        # sigma counts in-plane pixels, as in the paper, while anisotropic axes keep their ratio
        spacing = None if region.spacing is None else np.asarray(region.spacing, np.float64)
        spacing = None if spacing is None else tuple(spacing / spacing.min())
        kwargs = {"spacing": spacing, **weight_map}
        if region.instances is not None:
            kwargs["instances"] = region.instances
        region.weight = np.asarray(unet_weight_map(region.label, **kwargs), dtype=np.float32)
