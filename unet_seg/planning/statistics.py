"""Statistics of image/label regions, gathered region by region and summarised once: intensities
per channel, class frequencies, object sizes and extents, and whether distinct objects touch.

Everything is accumulated from regions (a whole small case, or sampled boxes of a big one), so
memory stays bounded by one region plus a fixed number of intensity samples per region.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

PERCENTILES = (0.5, 1.0, 5.0, 50.0, 95.0, 99.0, 99.5, 99.8)
CASE_PERCENTILES = (0.5, 99.5)  # per case: the range a fixed window would clip to
VALUES_PER_REGION = 20_000  # intensity samples kept per region and channel: percentiles to ~1 %
CLASSES = "classes"  # labels hold class values
OBJECTS = "objects"  # labels hold object ids (0 background), the data module's label_map


def touching_ids(ids: np.ndarray) -> set[int]:
    """Object ids of ``ids`` (``(*spatial)``, 0 background) that share a face with another id."""
    found: set[int] = set()
    for axis in range(ids.ndim):
        n = ids.shape[axis]
        a = np.take(ids, range(n - 1), axis=axis)
        b = np.take(ids, range(1, n), axis=axis)
        mask = (a != b) & (a > 0) & (b > 0)
        if mask.any():
            found.update(np.unique(a[mask]).tolist())
            found.update(np.unique(b[mask]).tolist())
    return found


def objects_of(label: np.ndarray, kind: str, ignore: Sequence[int] = ()) -> list[np.ndarray]:
    """The object id maps of ``label`` ``(*spatial)``: the ids themselves for ``kind="objects"``,
    else one map of connected components per class value > 0 (ignored values left out)."""
    if kind == OBJECTS:
        return [np.where(np.isin(label, ignore), 0, label)] if ignore else [label]
    maps = []
    for value in np.unique(label):
        if value <= 0 or value in ignore:
            continue
        components, _ = ndimage.label(label == value)
        maps.append(components)
    return maps


class Accumulator:
    """Statistics of ``channels``-channel images and their labels over many regions.

    Call :meth:`add` per region; :meth:`summary` gives plain values for the fingerprint.
    """

    def __init__(self, channels: int, kind: str, ignore: Sequence[int] = (), seed: int = 0):
        self.channels, self.kind, self.ignore = channels, kind, tuple(int(v) for v in ignore)
        self.rng = np.random.default_rng(seed)
        self.count = np.zeros(channels)
        self.total = np.zeros(channels)
        self.squares = np.zeros(channels)
        self.low = np.full(channels, np.inf)
        self.high = np.full(channels, -np.inf)
        self.values: list[list[np.ndarray]] = [[] for _ in range(channels)]
        self.foreground: list[list[np.ndarray]] = [[] for _ in range(channels)]
        # Per case and channel: the 0.5 / 99.5 percentiles of its samples (do cases agree?).
        self.case_ranges: list[list[list[float]]] = [[] for _ in range(channels)]
        self._case_start = [0] * channels
        self.classes: Counter[int] = Counter()
        self.sizes: list[int] = []
        self.extents: list[tuple[int, ...]] = []
        self.touching = 0

    def _sample(self, values: np.ndarray) -> np.ndarray:
        if values.size <= VALUES_PER_REGION:
            return values
        return values[self.rng.choice(values.size, VALUES_PER_REGION, replace=False)]

    def add(self, image: np.ndarray, label: np.ndarray) -> None:
        """One region: ``image`` ``(C, *spatial)`` (any real dtype), ``label`` ``(*spatial)``."""
        label = np.asarray(label)
        flat_label = label.reshape(-1)
        foreground = (flat_label > 0) & ~np.isin(flat_label, self.ignore)
        for c in range(self.channels):
            values = np.asarray(image[c], dtype=np.float64).reshape(-1)
            self.count[c] += values.size
            self.total[c] += values.sum()
            self.squares[c] += np.square(values).sum()
            if values.size:
                self.low[c] = min(self.low[c], values.min())
                self.high[c] = max(self.high[c], values.max())
            self.values[c].append(self._sample(values))
            self.foreground[c].append(self._sample(values[foreground]))
        if self.kind == OBJECTS:
            self.classes[0] += int((flat_label == 0).sum())
            self.classes[1] += int(foreground.sum())
            for value in self.ignore:
                self.classes[value] += int((flat_label == value).sum())
        else:
            values, counts = np.unique(flat_label, return_counts=True)
            self.classes.update({int(v): int(n) for v, n in zip(values, counts, strict=True)})
        for ids in objects_of(label, self.kind, self.ignore):
            self._add_objects(ids)

    def end_case(self) -> None:
        """Close a case: the regions added since the last call were one image's."""
        for c in range(self.channels):
            values = self.values[c][self._case_start[c] :]
            self._case_start[c] = len(self.values[c])
            if values:
                found = np.percentile(np.concatenate(values), CASE_PERCENTILES)
                self.case_ranges[c].append([float(v) for v in found])

    def _add_objects(self, ids: np.ndarray) -> None:
        present = np.unique(ids)
        present = present[present > 0]
        if not present.size:
            return
        # Compact ids first: find_objects allocates one entry per id up to the largest.
        compact = np.searchsorted(present, ids) + 1
        compact[ids == 0] = 0
        sizes = np.bincount(compact.reshape(-1), minlength=present.size + 1)[1:]
        for size, box in zip(sizes, ndimage.find_objects(compact), strict=True):
            if box is not None:
                self.sizes.append(int(size))
                self.extents.append(tuple(s.stop - s.start for s in box))
        if self.kind == OBJECTS:
            self.touching += len(touching_ids(compact))

    def summary(self) -> dict[str, Any]:
        """Plain values: ``intensity`` (per channel), ``labels``, ``objects``."""
        return {
            "intensity": [self._channel(c) for c in range(self.channels)],
            "labels": self._labels(),
            "objects": self._objects(),
        }

    def _channel(self, c: int) -> dict[str, Any]:
        n = max(self.count[c], 1)
        mean = self.total[c] / n
        std = float(np.sqrt(max(self.squares[c] / n - mean**2, 0.0)))
        values = np.concatenate(self.values[c]) if self.values[c] else np.zeros(1)
        fg = np.concatenate(self.foreground[c]) if self.foreground[c] else np.zeros(0)
        return {
            "channel": c,
            "mean": float(mean),
            "std": std,
            "min": float(self.low[c]),
            "max": float(self.high[c]),
            "percentiles": _percentiles(values),
            "foreground_percentiles": _percentiles(fg) if fg.size else None,
            # nnU-Net's z-score of a fixed window: the foreground's, from the same samples
            "foreground_mean": float(fg.mean()) if fg.size else None,
            "foreground_std": float(fg.std()) if fg.size else None,
            "case_percentiles": self.case_ranges[c],
        }

    def _labels(self) -> dict[str, Any]:
        counted = {v: n for v, n in self.classes.items() if v not in self.ignore}
        total = max(sum(counted.values()), 1)
        everything = max(sum(self.classes.values()), 1)
        return {
            "kind": self.kind,
            "values": sorted(counted),
            "class_fraction": {str(v): counted[v] / total for v in sorted(counted)},
            "ignored_fraction": sum(self.classes[v] for v in self.ignore) / everything,
        }

    def _objects(self) -> dict[str, Any]:
        if not self.sizes:
            return {
                "count": 0,
                "median_voxels": None,
                "p90_voxels": None,
                "median_extent": None,
                "p90_extent": None,
                "touching_fraction": None,
            }
        extents = np.array(self.extents)
        touching = self.touching / len(self.sizes) if self.kind == OBJECTS else None
        return {
            "count": len(self.sizes),
            "median_voxels": float(np.median(self.sizes)),
            "p90_voxels": float(np.percentile(self.sizes, 90)),
            "median_extent": [float(v) for v in np.median(extents, axis=0)],
            "p90_extent": [float(v) for v in np.percentile(extents, 90, axis=0)],
            "touching_fraction": touching,
        }


def _percentiles(values: np.ndarray) -> dict[str, float]:
    found = np.percentile(values, PERCENTILES)
    return {f"{p:g}": float(v) for p, v in zip(PERCENTILES, found, strict=True)}
