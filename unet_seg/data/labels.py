"""Stored label values -> class indices."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


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
