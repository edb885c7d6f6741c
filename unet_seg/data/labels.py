"""Stored label values -> class indices.

Besides a ``{stored value: class}`` map, ``label_map="objects"`` (:data:`OBJECTS`) reads the
masks Cellpose, StarDist and most instance datasets save, object ids with 0 as background: every
id is class 1, and the ids themselves are the instances.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

OBJECTS = "objects"  # label_map of object-id masks: 0 stays background, every id is class 1


def check_label_map(label_map: Any) -> None:
    """``ValueError`` unless ``label_map`` is None, a ``{stored value: class}`` mapping or
    :data:`OBJECTS`."""
    if label_map is not None and label_map != OBJECTS and not isinstance(label_map, Mapping):
        raise ValueError(f"label_map must map stored values to classes, or be {OBJECTS!r}, "
                         f"got {label_map!r}")  # fmt: skip


def map_labels(
    label: np.ndarray, label_map: Mapping[Any, int] | str | None, path: Path | str
) -> np.ndarray:
    """Stored label values -> class indices via ``label_map`` (e.g. ISBI ``{255: 0, 0: 1}``, or
    :data:`OBJECTS`: ids > 0 -> 1).

    Returns int64 like ``label``. ``ValueError`` naming ``path`` for values the map does not cover,
    and, without a ``{value: class}`` map, for float labels that are not whole numbers (0.5 would
    otherwise become class 0).
    """
    if label_map is None or label_map == OBJECTS:
        check_whole_numbers(label, path)
        if label.dtype == np.uint64 and label.size and label.max() > np.iinfo(np.int64).max:
            big = np.unique(label[label > np.iinfo(np.int64).max])
            raise ValueError(f"{path}: label values {big[:10].tolist()} exceed 2**63 - 1, the "
                             "largest class or object id this project handles")  # fmt: skip
        return (label > 0 if label_map == OBJECTS else label).astype(np.int64)
    check_label_map(label_map)
    out = np.full(label.shape, np.iinfo(np.int64).min, np.int64)
    for raw, cls in label_map.items():
        out[label == (float(raw) if isinstance(raw, str) else raw)] = int(cls)
    unmapped = np.unique(label[out == np.iinfo(np.int64).min])
    if unmapped.size:
        raise ValueError(
            f"{path}: label values {unmapped[:10].tolist()} are not in label_map {dict(label_map)}"
        )
    return out


def check_whole_numbers(label: np.ndarray, path: Path | str, what: str = "labels") -> None:
    """``ValueError`` naming ``path`` if float ``label`` (any shape: a whole label or a block of
    it) holds values that are not whole numbers (fractions, NaN, infinities); ``what`` the
    values are, for the message ("labels", "object ids")."""
    if np.issubdtype(label.dtype, np.floating):
        bad = label[~np.isfinite(label) | (label != np.round(label))]
        if bad.size:
            raise ValueError(f"{path}: {what} must be integers; found other values, e.g. "
                             f"{np.unique(bad)[:5].tolist()}")  # fmt: skip


def check_training_classes(counts: np.ndarray, num_classes: int, source: str) -> list[int]:
    """The classes of ``range(num_classes)`` absent from training labels whose voxel counts per
    class are ``counts`` (``(K,)``, ignored voxels left out; entries from ``num_classes`` on are
    not classes and are left out too).

    ``ValueError`` naming ``source`` when fewer than two classes hold voxels: a network cannot
    learn to tell classes apart from labels with one (a ``label_map`` that sends every stored
    value to one class, an empty mask, a target with no objects).
    """
    counts = np.asarray(counts)[:num_classes]
    present = [k for k, n in enumerate(counts) if n > 0]
    if not present:
        raise ValueError(f"{source}: the training labels hold no labelled voxels "
                         "(all are ignore_index)")  # fmt: skip
    if len(present) == 1:
        raise ValueError(
            f"{source}: every labelled training voxel is class {present[0]}, so there is "
            f"nothing to tell apart; check label_map and the label files (num_classes is "
            f"{num_classes})"
        )
    return [k for k in range(num_classes) if k not in present]
