"""One prediction against its truth, read slab by slab: a pair never has to fit in memory whole.

Slabs are planes along the first axis (rows of a 2D image, z-planes of a volume; leading axes of
length one, as an OME-Zarr's ``(1, Y, X)``, are skipped: :func:`slab_axis`), read lazily through
:func:`~unet_seg.io.open_volume` (TIFF memmap or pages, NIfTI proxies, zarr chunks: a slab is a
whole number of each store's chunks along that axis). Each slab of the prediction, the truth and,
where both exist, their object ids becomes class maps (uint8/uint16) and adds to:

- the confusion counts ``(K, 3)`` and the wrong voxels (pixel error);
- the :mod:`~unet_seg.evaluation.contingency` table of the object ids, or of the connected
  components of ``foreground_class``, labelled per slab and joined across slab faces
  (:mod:`~unet_seg.evaluation.components`) into exactly the ids ``ndi.label`` gives the whole
  image; ids may be sparse and huge (around 2**62): the table holds only pairs that occur;
- per plane, the wrong and the foreground voxels (the slices the report shows).

The table and the counts are those of the whole images, so every figure is too, to the last
bit. Memory (:func:`slab_bytes`, checked by :func:`plan_planes` before reading and after every
slab as the table grows): the files a format reads whole, one slab's arrays and temporaries, and
the table; a pair is refused only when even one slab (one chunk of planes) cannot fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.evaluation import contingency as table_module
from unet_seg.evaluation.components import SLOT_BYTES, SlabComponents
from unet_seg.evaluation.contingency import (
    SLAB_BYTES_PER_VOXEL,
    TABLE_BYTES_PER_ROW,
    Contingency,
    adapted_rand_error,
    combine,
    contingency,
    variation_of_information,
)
from unet_seg.evaluation.error_kinds import kinds_of
from unet_seg.evaluation.instances import MatchCounts, matches_of, overlaps_of, scores
from unet_seg.evaluation.metrics import confusion_counts, dice_iou
from unet_seg.evaluation.stored_labels import class_dtype, classes_of, object_ids
from unet_seg.io import LazyVolume, open_volume
from unet_seg.io.limits import memory_budget

SLAB_TARGET_VOXELS = 1 << 22  # voxels a slab holds when memory allows: about 100 MB in all


@dataclass(frozen=True)
class PairFiles:
    """The files of one pair: class labels of prediction and truth, and the object ids of both
    (instance files, or truth labels that are object ids) when both have them."""

    pred: Path
    gt: Path
    pred_ids: Path | None = None
    gt_ids: Path | None = None

    @property
    def instances(self) -> bool:
        return self.pred_ids is not None and self.gt_ids is not None

    def paths(self) -> list[Path]:
        return [self.pred, self.gt, *((self.pred_ids, self.gt_ids) if self.instances else ())]


@dataclass(frozen=True)
class LabelReading:
    """How label files become classes: ``num_classes``, the class whose components are the
    segments without instance files, and each side's ``{stored value: class}`` map (or
    ``"objects"``; None: values are classes)."""

    num_classes: int
    foreground: int = 1
    pred_map: Mapping[Any, int] | str | None = None
    gt_map: Mapping[Any, int] | str | None = None


@dataclass(frozen=True)
class PairResult:
    """Figures of one pair: ``row``, the ``(K, 3)`` confusion ``counts``, the object
    ``matches`` per IoU threshold, the files' ``shape`` (leading axes of length one dropped:
    :func:`slab_axis`), per plane along its first axis the ``wrong``
    and the truth's ``foreground`` voxels ``(depth,)``, the ``planes`` a slab held and the most
    bytes the guard ``counted`` at any time."""

    row: dict[str, float]
    counts: np.ndarray
    matches: dict[float, MatchCounts]
    shape: tuple[int, ...]
    wrong: np.ndarray
    foreground: np.ndarray
    planes: int
    counted: int


def figures(
    counts: np.ndarray, wrong: int, voxels: int, table: Contingency
) -> tuple[dict[str, float], dict[float, MatchCounts]]:
    """The row of one pair from its ``(K, 3)`` confusion counts, its wrong and all voxels and
    the contingency table of its segments; and the matching counts per IoU threshold."""
    dice, iou = dice_iou(counts)
    row: dict[str, float] = {}
    for k in range(len(counts)):
        row[f"dice_{k}"], row[f"iou_{k}"] = float(dice[k]), float(iou[k])
    row["pixel_error"] = wrong / voxels if voxels else math.nan
    row["rand_error"] = adapted_rand_error(table)
    row["vi"] = variation_of_information(table)
    overlaps = overlaps_of(table)
    matches = matches_of(overlaps)
    row.update(scores(matches))
    row.update(kinds_of(overlaps).row())
    return row, matches


def trimmed(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` from :func:`slab_axis` on: without leading axes of length one."""
    return tuple(shape[slab_axis(shape) :])


def open_pair(files: PairFiles) -> list[LazyVolume]:
    """The pair's files opened lazily (prediction, truth, then their ids), shapes checked
    without leading axes of length one (an OME-Zarr's ``(1, Y, X)`` pairs with a ``(Y, X)``
    TIFF).

    Raises:
        ValueError: a file cannot be opened, or its shape differs (naming the file).
    """
    volumes = [open_volume(path) for path in files.paths()]
    pred, gt = volumes[0], volumes[1]
    if trimmed(pred.shape) != trimmed(gt.shape):
        raise ValueError(f"{files.pred}: prediction shape {pred.shape} differs from ground truth "
                         f"{gt.shape} ({files.gt})")  # fmt: skip
    for path, ids in zip(files.paths()[2:], volumes[2:], strict=True):
        if trimmed(ids.shape) != trimmed(pred.shape):
            raise ValueError(f"{path}: shape {ids.shape} differs from its labels' {pred.shape}")
    return volumes


def _slab(volume: LazyVolume, start: int, stop: int) -> np.ndarray:
    """Planes ``start:stop`` of ``volume`` along its :func:`slab_axis` (leading axes of length
    one dropped)."""
    return volume[(*(0,) * slab_axis(volume.shape), slice(start, stop))]


def slab_bytes(volumes: Sequence[LazyVolume], num_classes: int, voxels: int) -> int:
    """What one slab of ``voxels`` allocates at most: each file's read and a reader's copy of
    it, two class maps, the segments (int32 components and a mask per side, or int64 copies of
    float ids and their check), two masks per plane, and the largest chunk temporaries
    (:data:`~unet_seg.evaluation.contingency.SLAB_BYTES_PER_VOXEL`)."""
    stored = sum(2 * v.dtype.itemsize for v in volumes)
    classes = 2 * class_dtype(num_classes).itemsize
    if len(volumes) > 2:
        segments = sum(24 for v in volumes[2:] if v.dtype.kind == "f")
    else:
        segments = 2 * (4 + 1)
    chunk = min(voxels, table_module.SLAB_VOXELS) * SLAB_BYTES_PER_VOXEL
    return voxels * (stored + classes + segments + 2) + chunk


def slab_axis(shape: Sequence[int]) -> int:
    """The axis slabs cut: the first longer than 1, so that labels stored with leading axes of
    length one (an OME-Zarr's ``(1, Y, X)``) are cut along ``Y``; the last when none is."""
    return next((i for i, n in enumerate(shape) if n > 1), max(len(shape) - 1, 0))


def _aligned(volumes: Sequence[LazyVolume]) -> int:
    """Planes a slab holds a multiple of: the stores' chunks along their :func:`slab_axis`
    (1 for files)."""
    align = 1
    for volume in volumes:
        chunks = (volume.metadata or {}).get("chunks")
        if chunks and len(chunks) == volume.ndim:
            align = math.lcm(align, int(chunks[slab_axis(volume.shape)]))
    return max(1, min(align, trimmed(volumes[0].shape)[0]))


def plan_planes(
    files: PairFiles, volumes: Sequence[LazyVolume], num_classes: int, budget: int
) -> tuple[int, int]:
    """``(planes, bytes)``: the planes a slab holds (:data:`SLAB_TARGET_VOXELS`, or all of them
    for a gzipped file; fewer when ``budget`` needs) and what evaluating so counts before its
    table: the files a format reads whole (:attr:`~unet_seg.io.LazyVolume.reads_whole`) and one
    slab.

    Raises:
        ValueError: naming the prediction, when not even one slab fits in ``budget``.
    """
    shape = trimmed(volumes[0].shape)
    depth, plane = shape[0], math.prod(shape[1:])
    whole = sum(v.dtype.itemsize * depth * plane for v in volumes if v.reads_whole)
    align = _aligned(volumes)
    target = SLAB_TARGET_VOXELS // max(plane, 1)
    if any(v.path.name.lower().endswith(".gz") for v in volumes):
        # A gzip stream has no index: each slab decompresses it from the start, so the
        # fewest slabs that fit are the fastest.
        target = depth
    planes = min(max(depth, 1), max(align, target // align * align))

    def cost(n: int) -> int:
        return whole + slab_bytes(volumes, num_classes, n * plane)

    while planes > align and cost(planes) > budget:
        planes = max(align, planes // 2 // align * align)
    if cost(planes) > budget:
        raise ValueError(
            f"{files.pred}: evaluating it against its truth needs about {cost(planes):,} bytes "
            f"of memory even {planes} plane(s) at a time, more than the {budget:,} allowed (half "
            "of the memory available); evaluate it on a machine with more memory, or crop it"
        )
    return planes, cost(planes)


def _as_slots(table: Contingency, true_offset: int, pred_offset: int) -> Contingency:
    """A slab's table of slab-local component ids, its ids made slots (background stays 0)."""
    true, pred = table.true_id.astype(np.int64), table.pred_id.astype(np.int64)
    true[true > 0] += true_offset
    pred[pred > 0] += pred_offset
    return Contingency(true, pred, table.count)


class _Segments:
    """The pair's segment table, added to slab by slab: object ids as they are, or the
    components of the foreground class as slots, renumbered at the end."""

    def __init__(self, instances: bool) -> None:
        self.instances = instances
        self.parts: list[Contingency] = []
        self.rows = 0
        self.compacted = 1 << 16  # combine the parts when they hold more rows than this
        self.pred = None if instances else SlabComponents()
        self.gt = None if instances else SlabComponents()

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        if self.instances:
            self.parts.append(contingency(pred, gt))
        else:
            pred_ids, pred_offset = self.pred.add(pred)
            gt_ids, gt_offset = self.gt.add(gt)
            self.parts.append(_as_slots(contingency(pred_ids, gt_ids), gt_offset, pred_offset))
        self.rows += len(self.parts[-1].count)
        if self.instances and self.rows > 2 * self.compacted:  # one object in many slabs
            self.parts = [combine(self.parts)]
            self.rows = len(self.parts[0].count)
            self.compacted = max(self.compacted, self.rows)

    def held_bytes(self) -> int:
        """What the table (and the components' union-find) holds and will take to finish."""
        held = self.rows * TABLE_BYTES_PER_ROW
        for side in (self.pred, self.gt):
            if side is not None:
                held += side.slots * SLOT_BYTES + side.pair_count() * 16
        return held

    def table(self) -> Contingency:
        if not self.instances:
            true_lut, pred_lut = self.gt.lut(), self.pred.lut()
            self.parts = [Contingency(true_lut[t.true_id], pred_lut[t.pred_id], t.count)
                          for t in self.parts]  # fmt: skip
        return combine(self.parts)


def evaluate_files(files: PairFiles, labels: LabelReading, budget: int | None = None) -> PairResult:
    """Evaluate one pair slab by slab within ``budget`` bytes (default: half the available
    memory, :func:`~unet_seg.io.limits.memory_budget`).

    Raises:
        ValueError: naming the file: unreadable, shapes differ, labels outside the classes or
            the label map, bad object ids, or more memory needed than ``budget`` (one slab,
            or the table as it grows).
    """
    budget = memory_budget() if budget is None else int(budget)
    k = labels.num_classes
    with ExitStack() as stack:
        volumes = open_pair(files)
        for volume in volumes:
            stack.callback(volume.close)
        planes, base = plan_planes(files, volumes, k, budget)
        shape = trimmed(volumes[0].shape)
        depth = shape[0]
        counts = np.zeros((k, 3), np.int64)
        wrong, foreground = np.zeros(depth, np.int64), np.zeros(depth, np.int64)
        segments, counted = _Segments(files.instances), base
        for z in range(0, depth, planes):
            stop = z + planes
            pred = classes_of(_slab(volumes[0], z, stop), k, labels.pred_map, files.pred)
            gt = classes_of(_slab(volumes[1], z, stop), k, labels.gt_map, files.gt)
            n = len(pred)
            counts += confusion_counts(pred, gt, k)
            wrong[z : z + n] = np.count_nonzero((pred != gt).reshape(n, -1), axis=1)
            foreground[z : z + n] = np.count_nonzero((gt != 0).reshape(n, -1), axis=1)
            if files.instances:
                segments.add(object_ids(_slab(volumes[2], z, stop), files.pred_ids),
                             object_ids(_slab(volumes[3], z, stop), files.gt_ids))  # fmt: skip
            else:
                segments.add(pred == labels.foreground, gt == labels.foreground)
            del pred, gt
            counted = max(counted, base + segments.held_bytes())
            if counted > budget:
                raise ValueError(
                    f"{files.pred}: evaluating it against its truth needs more than the "
                    f"{budget:,} bytes allowed (half of the memory available): its table of "
                    f"overlapping segments holds {segments.rows:,} id pairs after {z + n} of "
                    f"{depth} planes; evaluate it on a machine with more memory, or crop it"
                )
        table = segments.table()
    voxels = math.prod(shape)
    row, matches = figures(counts, int(wrong.sum()), voxels, table)
    return PairResult(row, counts, matches, shape, wrong, foreground, planes, counted)


def slice_labels(
    files: PairFiles, labels: LabelReading, z: int | None, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class maps ``(Y', X')`` of prediction and truth in slice ``z`` of a volume (None: the
    2D image itself), every ``step``-th voxel along both axes: only what a picture shows."""
    index = (*(() if z is None else (int(z),)), *(slice(None, None, step),) * 2)
    with open_volume(files.pred) as pred, open_volume(files.gt) as gt:
        return (
            classes_of(pred[(*(0,) * slab_axis(pred.shape), *index)], labels.num_classes,
                       labels.pred_map, files.pred),
            classes_of(gt[(*(0,) * slab_axis(gt.shape), *index)], labels.num_classes,
                       labels.gt_map, files.gt),
        )  # fmt: skip
