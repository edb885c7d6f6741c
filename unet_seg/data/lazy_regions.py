"""Training regions read from disk patch by patch, for training sets larger than memory.

A :class:`LazyRegion` keeps the files open lazily (:func:`unet_seg.io.open_volume`: zarr and
OME-Zarr by chunk, uncompressed TIFF memory-mapped, other formats by their lazy readers) and
reads for each patch only the box its (mirrored) indices span, plus a margin where the target
needs context. What it guarantees against the in-memory :class:`~unet_seg.data.regions.Region`
(``tests/data/test_lazy_regions.py``):

- images and labels of a patch are equal voxel for voxel, padding included, when the image's
  normalisation percentiles come from the whole file (files up to 4 M voxels; bigger ones use a
  strided subsample of about 4 M voxels, :func:`unet_seg.normalization.percentile_range`);
- the boundary target is equal: it is derived from the patch's box grown by the boundary width;
- the weight map's class weights are the whole region's (counted in one streaming pass), and its
  border term is computed on the box grown by the cut-off radius (5.3 sigma) on each side, so it
  equals the whole-region map within ``1e-6 w0`` wherever the objects near a voxel are whole
  within that margin: always with instance files, and for connected components unless an
  object's parts meet only beyond the margin (a component cut by the box counts as two objects).

Regions pickle without open files, so dataloader workers reopen them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.data.boundary import derive_target
from unet_seg.data.boxes import Box, Window
from unet_seg.data.label_index import CellSampler, LabelIndex
from unet_seg.data.labels import check_whole_numbers, map_labels
from unet_seg.data.lazy_images import ChannelImage, image_range, open_image
from unet_seg.data.pairs import ImageFiles, pair_name
from unet_seg.data.regions import region_places
from unet_seg.data.weightmap import RELATIVE_TOLERANCE, unet_weight_map
from unet_seg.io import LazyVolume, check_finite, open_volume
from unet_seg.io.volume import check_label_values
from unet_seg.normalization import clip_values, intensity_range, scale_to_unit


@dataclass(frozen=True)
class TargetRule:
    """How a label becomes the training target and its weight map (the data module's keys)."""

    target: str = "classes"
    object_class: int = 1
    boundary_width: float = 1.0
    ignore_index: int | None = -1
    weight_map: Mapping[str, Any] | None = None

    def margin(self, spacing: Sequence[float], weights: bool = True) -> tuple[int, ...]:
        """Voxels of context per axis that the target (and with ``weights`` its weight map) of
        a box depend on."""
        scale = np.asarray(spacing, np.float64) / min(spacing)
        margin = np.zeros(len(scale), np.int64)
        if self.target == "boundary":
            margin += np.ceil(self.boundary_width / scale).astype(np.int64) + 1
        if weights and self.weight_map and float(self.weight_map.get("w0", 10.0)) > 0:
            sigma = float(self.weight_map.get("sigma", 5.0))
            cutoff = sigma * math.sqrt(2.0 * math.log(1.0 / RELATIVE_TOLERANCE))
            margin += np.ceil(cutoff / scale).astype(np.int64) + 1
        return tuple(int(m) for m in margin)


@dataclass
class LazyRegion:
    """One image to cut patches from, read from disk by box.

    Attributes:
        image: the whole file's image ``(C, *file spatial)``, lazily.
        label, instances: the file's label (and instance ids, or None), lazily.
        place: the region within the file: an index of the first axis (a z-range, ``slice(None)``
            or one slice of a stack for a 2D model).
        name, spacing: as :class:`~unet_seg.data.regions.Region`'s.
        low, high: the image values that map to 0 and 1 (the file's percentiles, or a fixed
            window's mean and mean + std).
        clip: the fixed window the raw values are clipped to first, or None.
    """

    image: ChannelImage
    label: LazyVolume
    instances: LazyVolume | None
    place: int | slice
    name: str
    spacing: tuple[float, ...]
    low: float
    high: float
    num_classes: int
    label_map: Mapping[Any, int] | None
    rule: TargetRule
    index: LabelIndex | None = field(default=None, repr=False)
    clip: tuple[float, float] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        file_shape = self.label.shape
        if isinstance(self.place, int):
            return tuple(file_shape[1:])
        return (len(range(file_shape[0])[self.place]), *file_shape[1:])

    def _in_file(self, box: Box) -> tuple:
        if isinstance(self.place, int):
            return (self.place, *box)
        z0 = range(self.label.shape[0])[self.place].start
        return (slice(z0 + box[0].start, z0 + box[0].stop), *box[1:])

    def read_image(self, box: Box) -> np.ndarray:
        """Normalised image ``(C, *box size)`` float32."""
        raw = self.image[self._in_file(box)]
        check_finite(raw, self.image.path)
        return scale_to_unit(clip_values(raw, self.clip), self.low, self.high)

    def read_target(self, box: Box) -> np.ndarray:
        """The training target ``(*box size)`` int64 of ``box`` (read with the context the
        boundary target needs)."""
        target, _, inner = self._target(box, weights=False)
        return target[inner]

    def read_training(self, box: Box) -> tuple[np.ndarray, np.ndarray | None]:
        """Target int64 and weight map float32 (None without one), ``(*box size)`` each, from
        ``box`` grown by the context both need."""
        target, instances, inner = self._target(box, weights=bool(self.rule.weight_map))
        if not self.rule.weight_map:
            return target[inner], None
        return target[inner], self._weight_map(target, instances)[inner]

    def _target(self, box: Box, weights: bool) -> tuple[np.ndarray, np.ndarray | None, Box]:
        """(target, instance ids or None) of ``box`` grown by the rule's margin, and where
        ``box`` lies in them."""
        margin = self.rule.margin(self.spacing, weights)
        grown = tuple(slice(max(b.start - m, 0), min(b.stop + m, n)) for b, m, n in
                      zip(box, margin, self.shape, strict=True))  # fmt: skip
        where = self._in_file(grown)
        label = map_labels(self.label[where], self.label_map, self.label.path)
        check_label_values(label, self.num_classes, self.label.path, self.rule.ignore_index)
        inst = None
        if self.instances is not None:
            inst = self.instances[where]
            check_whole_numbers(inst, self.instances.path, "object ids")
            inst = inst.astype(np.int64)
        r = self.rule
        target = derive_target(label, r.target, inst, r.object_class, r.boundary_width,
                               self.spacing, r.ignore_index)  # fmt: skip
        inner = tuple(slice(b.start - g.start, b.stop - g.start) for b, g in
                      zip(box, grown, strict=True))  # fmt: skip
        return target, inst, inner

    def _weight_map(self, target: np.ndarray, instances: np.ndarray | None) -> np.ndarray:
        # sigma counts in-plane pixels, as add_weight_maps does for the in-memory regions
        scale = np.asarray(self.spacing, np.float64)
        kwargs: dict[str, Any] = {"spacing": tuple(scale / scale.min()), **self.rule.weight_map}
        if kwargs.get("class_weights", "balanced") == "balanced":
            kwargs["class_weights"] = (self.index or self.scanned()).balanced_weights()
        if instances is not None:
            kwargs["instances"] = instances
        return np.asarray(unet_weight_map(target, **kwargs), np.float32)

    def scanned(self, classes: Sequence[int] | None = None) -> LabelIndex:
        """The region's :class:`LabelIndex` (foreground ``classes``), streaming the label once
        on first use; also checks every label value."""
        wanted = None if classes is None else tuple(classes)
        if self.index is None or self.index.classes != wanted:
            self.index = LabelIndex.scan(self.read_target, self.shape, classes)
        return self.index

    def patch(self, start: Sequence[int], size: Sequence[int], mode: str) -> dict[str, np.ndarray]:
        """As :meth:`Region.patch <unet_seg.data.regions.Region.patch>`: image
        ``(C, *size)``, label and weight ``(*size)``."""
        window = Window.plan(self.shape, start, size, mode)
        target, weight = self.read_training(window.box)
        return {
            "image": window.take(self.read_image(window.box)),
            "label": window.take(target),
            "weight": np.ones(tuple(size), np.float32) if weight is None else window.take(weight),
        }

    def close(self) -> None:
        """Release the open files and memory maps (reopened on the next read), so the pages a
        full pass touched (the label scan) do not stay mapped into the process."""
        for volume in [*self.image.volumes, self.label, self.instances]:
            if volume is not None:
                volume.close()

    def foreground_sampler(
        self, classes: Sequence[int] | None, rng: np.random.Generator | None = None
    ) -> CellSampler:
        """Centres on voxels of ``classes`` (default: every class > 0), all equally likely."""
        return CellSampler(self.scanned(classes), self.shape, self.read_target)


def open_regions(
    pairs: Sequence[tuple[ImageFiles, Path]],
    spatial_dims: int,
    num_classes: int,
    role: str,
    rule: TargetRule,
    val_slices: Sequence[int] | None = None,
    instances: Sequence[Path | None] | None = None,
    label_map: Mapping[Any, int] | None = None,
    normalization: Mapping[str, float] | None = None,
) -> list[LazyRegion]:
    """:func:`~unet_seg.data.regions.build_regions` without loading: the same regions, with
    the same names, opened lazily; only the headers and a percentile subsample are read."""
    regions: list[LazyRegion] = []
    for k, (image_path, label_path) in enumerate(pairs):
        label = open_volume(label_path)
        if label.ndim not in ((2, 3) if spatial_dims == 2 else (3,)):
            raise ValueError(
                f"{label_path}: expected a label with {'2 or 3' if spatial_dims == 2 else '3'} "
                f"dimensions, got shape {label.shape}"
            )
        image = open_image(image_path, label)
        inst = None
        if instances is not None and instances[k] is not None:
            inst = open_volume(instances[k])
            if inst.shape != label.shape:
                raise ValueError(
                    f"{instances[k]}: instance shape {inst.shape} does not match "
                    f"label shape {label.shape} of {label_path}"
                )
        spacing = tuple(image.volumes[0].spacing)[-label.ndim :]
        spacing = (1.0,) * (label.ndim - len(spacing)) + spacing
        lo, hi, clip = intensity_range(normalization, partial(image_range, image))
        for volume in image.volumes:  # the subsample touched pages all over a memory map
            volume.close()
        name = pair_name(image_path, label_path)
        for place, suffix in region_places(label.shape, spatial_dims, val_slices, role, image_path):
            regions.append(
                LazyRegion(
                    image,
                    label,
                    inst,
                    place,
                    name + suffix,
                    spacing[label.ndim - spatial_dims :],
                    lo,
                    hi,
                    num_classes,
                    label_map,
                    rule,
                    clip=clip,
                )
            )
    return regions
