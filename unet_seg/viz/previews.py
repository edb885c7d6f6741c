"""``<stem>_preview.png``: a few slices of a prediction, drawn from what was written.

Prediction counts the foreground voxels of every slice as its blocks finish (a number per
slice, whatever the volume's size). :class:`SlicePreview` picks the slices to show from those
counts (slices spread evenly over the depth and the slice with the most foreground), and only
those slices of the image, the labels (and instances) are read back, strided to at most
:data:`MAX_SIDE` pixels a side, so the whole volume or even a whole plane is never in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
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

PlaneReader = Callable[[int], np.ndarray]  # slice index -> its (Y, X) plane, already strided


class SlicePreview:
    """Chooses up to ``num_slices`` slices of a ``(Z, Y, X)`` label map and draws them.

    Args:
        shape: ``(Z, Y, X)`` of the label map (a 2D image is ``(1, Y, X)``).
        foreground: ``(Z,)`` foreground voxels per slice.
        num_slices: panels per row of the preview.
        max_side: longest side drawn; readers stride planes by :attr:`step`.
    """

    def __init__(
        self,
        shape: Sequence[int],
        foreground: Sequence[int],
        num_slices: int = 4,
        max_side: int = MAX_SIDE,
    ) -> None:
        if len(shape) != 3 or num_slices < 1 or len(foreground) != shape[0]:
            raise ValueError(
                f"expected a (Z, Y, X) shape, Z foreground counts and num_slices >= 1, got "
                f"{tuple(shape)}, {len(foreground)} counts and {num_slices}"
            )
        self.shape, self.num_slices = tuple(int(s) for s in shape), num_slices
        self.foreground = np.asarray(foreground, dtype=np.int64)
        self.step = subsample_step(self.shape, max_side)

    def chosen(self) -> list[int]:
        """The slices shown, in order: the fullest slice (the first of equals) and evenly spread
        ones; the spread alone when nothing was found."""
        spread_slices = spread(self.shape[0], self.num_slices)
        if self.foreground.max(initial=0) <= 0:
            return spread_slices
        best = int(np.argmax(self.foreground))
        others = [z for z in spread_slices if z != best]
        return sorted([best, *others][: self.num_slices])

    def figure(
        self,
        read_image: PlaneReader,
        read_labels: PlaneReader,
        read_instances: PlaneReader | None = None,
        title: str = "",
    ) -> Figure:
        """The preview figure: per chosen slice a column of image, labels (and instances).

        The readers return slice ``z`` strided by :attr:`step` (see :func:`plane_reader`).
        """
        chosen = self.chosen()
        images = [np.asarray(read_image(z), dtype=np.float32) for z in chosen]
        lo, hi = display_range(np.stack(images))
        where = (lambda z: f"slice {z}") if self.shape[0] > 1 else (lambda z: "")
        grays = [to_gray(image, lo, hi) for image in images]
        rows: list[list[tuple[str, np.ndarray]]] = [[], []]
        for z, gray in zip(chosen, grays, strict=True):
            rows[0].append((f"image {where(z)}", gray))
            labels = np.asarray(read_labels(z))
            rows[1].append((f"labels {where(z)}", composite(gray, class_rgba(labels))))
        if read_instances is not None:
            rows.append([])
            for z, gray in zip(chosen, grays, strict=True):
                ids = np.asarray(read_instances(z))
                rows[2].append((f"instances {where(z)}", composite(gray, instance_rgba(ids))))
        return image_grid(rows, title=title)

    def write(
        self,
        path: str | os.PathLike,
        read_image: PlaneReader,
        read_labels: PlaneReader,
        read_instances: PlaneReader | None = None,
        title: str = "",
    ) -> Path:
        """Draw the preview (:meth:`figure`) and write it to ``path`` atomically."""
        figure = self.figure(read_image, read_labels, read_instances, title)
        return save_png(figure, path, palette=True)


def plane_reader(volume: Any, axis: int = 0, step: int = 1, lead: tuple = ()) -> PlaneReader:
    """``z -> (A, B)``: plane ``z`` across spatial ``axis`` of a ``(*lead, Y, X)`` or
    ``(*lead, Z, Y, X)`` volume, strided by ``step`` in plane; ``lead`` indexes the axes before
    the spatial ones (e.g. ``(0,)``: the first channel). A lazy volume reads that plane only; a
    2D volume is its own plane 0."""
    spatial = len(volume.shape) - len(lead)

    def read(z: int) -> np.ndarray:
        index: list[Any] = [slice(None, None, step)] * spatial
        if spatial == 3:
            index[axis] = int(z)
        return np.asarray(volume[(*lead, *index)])

    return read
