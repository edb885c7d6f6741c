"""``<stem>_preview.png``: a few slices of a prediction, chosen while it streams out.

Prediction yields its label map in z-slabs; :class:`PreviewCollector` sees each slab once and
keeps only the label slices it may show (subsampled): slices spread evenly over the depth, fixed
in advance, and the slice with the most foreground so far. The image (and instances, written
after the label map) are read for the chosen slices only when the preview is drawn, so the whole
volume is never in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from unet_seg.viz.figures import image_grid, save_png
from unet_seg.viz.overlays import (
    class_rgba,
    composite,
    display_range,
    instance_rgba,
    spread,
    subsample_step,
    to_gray,
)

MAX_SIDE = 512  # pixels kept per slice side: enough for a 256-pixel panel, bounded for any size


class PreviewCollector:
    """Chooses and keeps up to ``num_slices`` label slices of a ``(Z, Y, X)`` map fed by slabs.

    Args:
        shape: ``(Z, Y, X)`` of the label map as streamed (a 2D image is ``(1, Y, X)``).
        num_slices: panels per row of the preview.
        max_side: longest kept side; larger slices are strided.
    """

    def __init__(
        self, shape: tuple[int, int, int], num_slices: int = 4, max_side: int = MAX_SIDE
    ) -> None:
        if len(shape) != 3 or num_slices < 1:
            raise ValueError(f"expected a (Z, Y, X) shape and num_slices >= 1, got {shape}")
        self.shape, self.num_slices = tuple(int(s) for s in shape), num_slices
        self.step = subsample_step(shape, max_side)
        self._spread = spread(self.shape[0], num_slices)
        self._kept: dict[int, np.ndarray] = {}
        self._best: tuple[int, int] = (-1, -1)  # (foreground voxels, z) of the fullest slice

    def add(self, z0: int, labels: np.ndarray) -> None:
        """Look at rows ``z0 .. z0 + n - 1``: ``labels`` ``(n, Y, X)`` class indices."""
        counts = np.count_nonzero(labels.reshape(len(labels), -1), axis=1)
        for i, count in enumerate(counts):
            z = z0 + i
            better = count > self._best[0]
            if z in self._spread or better:
                self._kept[z] = np.array(labels[i, :: self.step, :: self.step])
            if better:
                if self._best[1] not in self._spread:
                    self._kept.pop(self._best[1], None)
                self._best = (int(count), z)

    def chosen(self) -> list[int]:
        """The slices the preview shows, in order: the fullest slice and evenly spread ones."""
        if self._best[0] <= 0:  # nothing found anywhere: the spread alone
            return list(self._spread)
        others = [z for z in self._spread if z != self._best[1]]
        return sorted([self._best[1], *others][: self.num_slices])

    def figure(
        self,
        read_image: Callable[[int], np.ndarray],
        read_instances: Callable[[int], np.ndarray] | None = None,
        title: str = "",
    ) -> Figure:
        """The preview figure: per chosen slice a column of image, labels (and instances).

        ``read_image(z)`` and ``read_instances(z)`` return slice ``z`` ``(Y, X)`` in full size.
        """
        chosen = self.chosen()
        missing = [z for z in chosen if z not in self._kept]
        if missing:
            raise ValueError(f"preview slices {missing} were never streamed (shape {self.shape})")
        images = [np.asarray(read_image(z))[:: self.step, :: self.step] for z in chosen]
        lo, hi = display_range(np.stack(images))
        where = (lambda z: f"slice {z}") if self.shape[0] > 1 else (lambda z: "")
        rows: list[list[tuple[str, np.ndarray]]] = [[], []]
        grays = [to_gray(image, lo, hi) for image in images]
        for z, gray in zip(chosen, grays, strict=True):
            rows[0].append((f"image {where(z)}", gray))
            rows[1].append((f"labels {where(z)}", composite(gray, class_rgba(self._kept[z]))))
        if read_instances is not None:
            rows.append([])
            for z, gray in zip(chosen, grays, strict=True):
                ids = np.asarray(read_instances(z))[:: self.step, :: self.step]
                rows[2].append((f"instances {where(z)}", composite(gray, instance_rgba(ids))))
        return image_grid(rows, title=title)

    def write(
        self,
        path: str | os.PathLike,
        read_image: Callable[[int], np.ndarray],
        read_instances: Callable[[int], np.ndarray] | None = None,
        title: str = "",
    ) -> Path:
        """Draw the preview (:meth:`figure`) and write it to ``path`` atomically."""
        return save_png(self.figure(read_image, read_instances, title), path, palette=True)


def plane_reader(volume: Any, axis: int = 0) -> Callable[[int], np.ndarray]:
    """``z -> (A, B)``: plane ``z`` across spatial ``axis`` of a ``(Y, X)`` or ``(Z, Y, X)``
    label volume (a lazy volume reads that plane only); a 2D volume is its own plane 0."""

    def read(z: int) -> np.ndarray:
        if volume.ndim == 2:
            return np.asarray(volume[...])
        index: list[Any] = [slice(None)] * 3
        index[axis] = int(z)
        return np.asarray(volume[tuple(index)])

    return read
