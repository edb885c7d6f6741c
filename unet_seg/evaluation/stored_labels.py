"""Stored label values as the evaluation reads them: classes in the narrowest dtype, object ids
as stored; any shape (a slab of a file), checked and named by file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.data.labels import map_labels
from unet_seg.evaluation import contingency as table_module


def class_dtype(num_classes: int) -> np.dtype:
    """The narrowest unsigned dtype holding the classes ``0..num_classes - 1``."""
    return np.min_scalar_type(max(int(num_classes) - 1, 0))


def classes_of(
    stored: np.ndarray, num_classes: int, label_map: Mapping[Any, int] | str | None, path: Path
) -> np.ndarray:
    """Stored labels (any shape: a slab) as classes in :func:`class_dtype`, mapped by
    ``label_map`` (:func:`~unet_seg.data.labels.map_labels`) a chunk at a time, so no int64
    copy of the whole slab.

    Raises:
        ValueError: naming ``path`` and the values not integers, not in ``label_map``, or
            outside ``0..num_classes - 1``.
    """
    out = np.empty(stored.shape, class_dtype(num_classes))
    flat_in, flat_out = stored.reshape(-1), out.reshape(-1)
    chunk = table_module.SLAB_VOXELS
    for start in range(0, flat_in.size, chunk):
        labels = map_labels(flat_in[start : start + chunk], label_map, path)
        outside = np.unique(labels[(labels < 0) | (labels >= num_classes)])
        if outside.size:
            raise ValueError(
                f"{path}: label values {outside[:10].tolist()} are outside the classes "
                f"0..{num_classes - 1} (num_classes={num_classes}); map stored values to classes "
                "with gt_label_map / pred_label_map, e.g. {0: 0, 255: 1} for 0/255 masks, "
                "{0: 0, 1: 1, 2: 1} for the labels of a data.target=boundary model"
            )
        flat_out[start : start + chunk] = labels
    return out


def object_ids(stored: np.ndarray, path: Path) -> np.ndarray:
    """Object ids as stored (integral floats as int64); ``ValueError`` naming ``path`` for
    fractions, NaN or negative ids."""
    if stored.dtype == bool:
        return stored.view(np.uint8)
    if np.issubdtype(stored.dtype, np.floating):
        return map_labels(stored, None, path)  # checks the values are whole numbers
    if not np.issubdtype(stored.dtype, np.integer):
        raise ValueError(f"{path}: object ids must be integers, got dtype {stored.dtype}")
    if np.issubdtype(stored.dtype, np.signedinteger) and stored.size and stored.min() < 0:
        raise ValueError(f"{path}: object ids must be >= 0, found {int(stored.min())}")
    return stored
