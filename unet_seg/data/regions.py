"""From image/label files to training regions: reading and checking a pair, normalising the image,
and splitting train/val by file or by slice.

A *region* is what patches are cut from: a 2D image, one slice of a stack (``spatial_dims: 2``),
or a 3D volume or a z-range of one (``spatial_dims: 3``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.data.labels import check_whole_numbers, map_labels
from unet_seg.data.pairs import ImageFiles, pair_name
from unet_seg.data.patches import CoordinateSampler, extract_patch, foreground_coordinates
from unet_seg.io import Volume, check_pair, read_volume
from unet_seg.normalization import normalize

FOREGROUND_LIMIT = 20_000  # coordinates kept per region for oversampling; bounds memory


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

    def patch(self, start: Sequence[int], size: Sequence[int], mode: str) -> dict[str, np.ndarray]:
        """The ``size`` window at ``start`` of image ``(C, *size)``, label and weight
        ``(*size)`` (ones if no weight map), mirrored (``mode``) beyond the borders."""
        weight = np.ones(tuple(size), np.float32)
        if self.weight is not None:
            weight = extract_patch(self.weight, start, size, mode)
        return {
            "image": extract_patch(self.image, start, size, mode),
            "label": extract_patch(self.label, start, size, mode),
            "weight": weight,
        }

    def foreground_sampler(
        self, classes: Sequence[int] | None, rng: np.random.Generator
    ) -> CoordinateSampler:
        """Centres on voxels of ``classes`` (default: every class > 0), from a bounded random
        subset of their coordinates (``rng`` picks it)."""
        return CoordinateSampler(foreground_coordinates(self.label, classes, FOREGROUND_LIMIT, rng))


def read_image(image_path: ImageFiles, ndim: tuple[int, ...]) -> Volume:
    """One image file, or channel files stacked on a leading axis (``ValueError`` if their
    shapes differ); the geometry is the first file's."""
    if isinstance(image_path, Path):
        return read_volume(image_path, ndim=ndim)
    volumes = [read_volume(path, ndim=ndim[0]) for path in image_path]
    for path, volume in zip(image_path[1:], volumes[1:], strict=True):
        if volume.array.shape != volumes[0].array.shape:
            raise ValueError(
                f"{path}: channel of shape {volume.array.shape} does not match "
                f"{image_path[0]} of shape {volumes[0].array.shape}"
            )
    first = volumes[0]
    stacked = np.stack([v.array for v in volumes])
    return Volume(stacked, first.affine, first.spacing, first.metadata, first.path)


def read_pair(
    image_path: ImageFiles,
    label_path: Path,
    spatial_dims: int,
    num_classes: int,
    label_map: Mapping[Any, int] | None = None,
    ignore_index: int | None = -1,
    normalization: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read and check one pair; returns image ``(C, *shape)`` float32 normalised, label
    ``(*shape)`` int64 and the spacing. ``shape`` has ``spatial_dims`` axes, or 3 for a stack of
    2D slices when ``spatial_dims`` is 2. ``image_path`` may be one file per channel."""
    label_ndims = (2, 3) if spatial_dims == 2 else (3,)
    label_volume = read_volume(label_path, ndim=label_ndims)
    label = map_labels(label_volume.array, label_map, label_path)
    image_volume = read_image(image_path, ndim=(label.ndim, label.ndim + 1))
    image = image_volume.array
    if image.ndim == label.ndim:
        image = image[None]
    check_pair(image, label, num_classes, label_path, ignore_index, spatial_dims=label.ndim)
    image = normalize(image, normalization)
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
    pairs: Sequence[tuple[ImageFiles, Path]],
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
            inst = read_volume(instances[k], ndim=label.ndim).array
            check_whole_numbers(inst, instances[k], "object ids")
            inst = inst.astype(np.int64)
            if inst.shape != label.shape:
                raise ValueError(
                    f"{instances[k]}: instance shape {inst.shape} does not match "
                    f"label shape {label.shape} of {label_path}"
                )
        name = pair_name(image_path, label_path)
        for place, suffix in region_places(label.shape, spatial_dims, val_slices, role, image_path):
            regions.append(
                Region(
                    image[:, place],
                    label[place],
                    None,
                    name + suffix,
                    None if inst is None else inst[place],
                    spacing[label.ndim - spatial_dims :],
                )
            )
    return regions


def region_places(
    shape: Sequence[int],
    spatial_dims: int,
    val_slices: Sequence[int] | None,
    role: str,
    path: ImageFiles,
) -> list[tuple[int | slice, str]]:
    """Where a file of label ``shape`` holds the regions of ``role``: per region the index of
    its first axis (a z-range, all of a 2D image, or one slice of a stack for a 2D model) and
    the suffix of its name."""
    if len(shape) == spatial_dims:  # a 2D image, or a 3D volume for a 3D model
        if len(shape) == 2 and val_slices is not None:
            raise ValueError(f"{path}: val_slices needs a stack, this is a 2D image")
        places = []
        for zr in z_ranges(shape[0], val_slices if len(shape) == 3 else None, role):
            part = slice(zr.start, zr.stop) if len(shape) == 3 else slice(None)
            places.append((part, f"[{zr.start}:{zr.stop}]" if val_slices is not None else ""))
        return places
    # a stack seen by a 2D model: one region per slice
    return [(z, f"[{z}]") for zr in z_ranges(shape[0], val_slices, role) for z in zr]
