"""What ``unet-seg-tune`` holds in memory, counted from the files' headers before any is read.

The grid search scores every setting on every validation case, so each case's class
probabilities ``(K, *spatial)`` float32 and its true object ids ``(*spatial)`` int32 stay in
memory for the whole search. Before that, the validation files are read whole (the normalised
image float32 per channel, the class labels int64 and the instances int64), and while a case is
predicted, segmented and matched its temporaries come on top. :func:`check_tune_memory` adds this
up per case and refuses, naming the case, where it passes half the available memory
(:func:`~unet_seg.io.limits.memory_budget`), the budget every reader and ``unet-seg-evaluate``
keep to.

The probabilities are kept as float32, not quantised: the thresholds searched compare them
exactly, and float16 or uint8 would move objects across a threshold and change the scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unet_seg.io.limits import memory_budget
from unet_seg.io.volumes import open_volume

PROBABILITY_BYTES = 4  # float32 per class and voxel, kept for the search
TRUTH_BYTES = 4  # int32 object ids per voxel, kept for the search (see compact_ids)
LABEL_BYTES = 8  # int64 class labels per voxel, while the files are read
INSTANCE_BYTES = 8  # int64 object ids per voxel, while the files are read
CHANNEL_BYTES = 4  # float32 normalised image per channel and voxel, while the files are read
# One case's temporaries on top, per voxel: the tiled prediction's blended sums, weights and
# concatenated slabs, the reader's native copy and percentiles, a watershed's distance map, seeds
# and queue, the contingency table's sort. tracemalloc measured at most 34 bytes a voxel on the
# tests' cases (tests/tuning/test_memory.py); 64 leaves room for 3D and many classes.
WORK_BYTES_PER_VOXEL = 64
WORK_BYTES_PER_CLASS_VOXEL = 8  # the prediction's sums and the slabs concatenated, per class


@dataclass(frozen=True)
class TuneCase:
    """One validation file as its headers describe it: ``voxels`` of its labels, image
    ``channels`` and whether object ``instances`` are read with it."""

    name: str
    voxels: int
    channels: int
    instances: bool


def case_of(image: Path | Sequence[Path], label: Path, instances: bool) -> TuneCase:
    """The :class:`TuneCase` of one ``(image, label)`` pair, from headers only (an image of one
    file per channel is a sequence)."""
    shape = tuple(open_volume(label).shape)
    if isinstance(image, Path):
        image_shape = tuple(open_volume(image).shape)
        channels = int(image_shape[0]) if len(image_shape) == len(shape) + 1 else 1
    else:
        channels = len(image)
    return TuneCase(str(label), math.prod(int(s) for s in shape), channels, instances)


def read_bytes(case: TuneCase) -> int:
    """Bytes of ``case``'s files as read for tuning (image, labels, instances)."""
    per_voxel = case.channels * CHANNEL_BYTES + LABEL_BYTES + INSTANCE_BYTES * case.instances
    return case.voxels * per_voxel


def kept_bytes(case: TuneCase, num_classes: int) -> int:
    """Bytes ``case`` holds through the search: probabilities and object ids."""
    return case.voxels * (num_classes * PROBABILITY_BYTES + TRUTH_BYTES)


def work_bytes(case: TuneCase, num_classes: int) -> int:
    """Bytes of ``case``'s temporaries while it is predicted, segmented and scored."""
    return case.voxels * (WORK_BYTES_PER_VOXEL + num_classes * WORK_BYTES_PER_CLASS_VOXEL)


def tune_bytes(cases: Sequence[TuneCase], num_classes: int) -> list[int]:
    """Per case, the bytes tuning needs at most once it has taken that case and those before:
    every file read so far, what the cases keep for the search, and the largest case's
    temporaries. The last entry is the whole run's figure."""
    needed, read, kept, work = [], 0, 0, 0
    for case in cases:
        read += read_bytes(case)
        kept += kept_bytes(case, num_classes)
        work = max(work, work_bytes(case, num_classes))
        needed.append(read + kept + work)
    return needed


def check_tune_memory(
    cases: Sequence[TuneCase], num_classes: int, budget: int | None = None, held: int = 0
) -> int:
    """``ValueError`` naming the first case with which tuning would need more than ``budget``
    bytes (default :func:`memory_budget`), ``held`` bytes (other folds' cases kept for the same
    search) included; returns the bytes it needs."""
    budget = memory_budget() if budget is None else int(budget)
    needed = [held + n for n in tune_bytes(cases, num_classes)]
    for k, (case, total) in enumerate(zip(cases, needed, strict=True)):
        if total > budget:
            cause = "with the cases before it " if k else ""
            raise ValueError(
                f"{case.name}: tuning on it {cause}needs about {total:,} bytes of memory "
                f"({case.voxels:,} voxels, {num_classes} classes), more than the {budget:,} "
                "allowed (half of the memory available); tune on fewer or smaller validation "
                "cases (data.val_names=[...] or data.val_slices=[start,stop])"
            )
    return needed[-1] if needed else held


def compact_ids(ids: np.ndarray) -> np.ndarray:
    """Object ids ``(*spatial)`` as int32: unchanged where they fit, else renumbered 1..n in
    the order of the ids (0 stays background), so that huge sparse ids (2**40) cost no memory
    by their size in anything indexed by id."""
    ids = np.asarray(ids)
    info = np.iinfo(np.int32)
    if ids.size == 0 or (ids.min() >= 0 and ids.max() <= info.max):
        return ids.astype(np.int32, copy=False)
    values, inverse = np.unique(ids, return_inverse=True)
    if values.size > info.max:
        raise ValueError(f"{values.size:,} objects are more than int32 ids can number")
    background = np.flatnonzero(values == 0)
    inverse = inverse.reshape(ids.shape).astype(np.int32)
    if background.size:  # 0 keeps its meaning; ids below it (negative) stay apart from it
        zero = int(background[0])
        inverse += np.int32(1)
        inverse[inverse == zero + 1] = 0
        inverse[inverse > zero + 1] -= np.int32(1)
    else:
        inverse += np.int32(1)
    return inverse
