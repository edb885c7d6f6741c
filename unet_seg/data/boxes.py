"""Patches read from disk by box: the window's voxel indices under a padding mode, and the one
box of the volume that holds them.

:func:`unet_seg.data.patches.extract_patch` pads an array that is in memory; here the padding is
an index map instead (``reflect`` mirrors without repeating the edge voxel, ``symmetric`` with,
``edge`` repeats it, ``constant`` fills), so a patch needs only the box its indices span, read
from a lazy volume. :meth:`Window.take` on that box equals ``extract_patch`` on the whole array,
voxel for voxel (``tests/data/test_lazy_regions.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from unet_seg.data.patches import PAD_MODES, reflect_index

Box = tuple[slice, ...]  # one ``slice(start, stop)`` per spatial axis


def window_indices(
    start: int, extent: int, length: int, mode: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices into ``[0, length)`` of the window ``start .. start + extent`` of one axis, and
    for ``constant`` mode the mask of the window's positions inside the axis (else None)."""
    if mode not in PAD_MODES:
        raise ValueError(f"padding mode must be one of {PAD_MODES}, got {mode!r}")
    index = np.arange(start, start + extent, dtype=np.int64)
    if mode == "reflect":
        return reflect_index(index, length), None
    if mode == "symmetric":
        period = 2 * length
        index = np.mod(index, period)
        return np.where(index >= length, period - 1 - index, index), None
    inside = (index >= 0) & (index < length)
    return np.clip(index, 0, length - 1), None if mode == "edge" else inside


@dataclass(frozen=True)
class Window:
    """A patch of a volume as indices: ``box`` to read, and per axis the ``indices`` (within the
    volume) of the patch's positions; ``inside`` masks them for ``constant`` padding."""

    box: Box
    indices: tuple[np.ndarray, ...]
    inside: np.ndarray | None

    @classmethod
    def plan(
        cls, shape: Sequence[int], start: Sequence[int], size: Sequence[int], mode: str
    ) -> Window:
        """The ``size`` window at ``start`` of a volume of spatial ``shape``, padded by ``mode``."""
        axes = [window_indices(int(s), int(n), int(length), mode) for s, n, length in
                zip(start, size, shape, strict=True)]  # fmt: skip
        indices = tuple(i for i, _ in axes)
        box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in indices)
        inside = None
        if axes[0][1] is not None:
            inside = np.ones((), bool)
            for axis, (_, mask) in enumerate(axes):
                inside = inside[..., None] & mask.reshape((1,) * axis + (-1,))
        return cls(box, indices, inside)

    def take(self, data: np.ndarray, cval: float = 0) -> np.ndarray:
        """The patch ``(..., *size)`` from ``data`` ``(..., *box size)``, the box's contents."""
        local = np.ix_(*(i - b.start for i, b in zip(self.indices, self.box, strict=True)))
        patch = np.array(data[(Ellipsis, *local)])
        if self.inside is not None:
            patch[..., ~self.inside] = cval
        return patch


def read_window(
    read: Callable[[Box], np.ndarray],
    shape: Sequence[int],
    start: Sequence[int],
    size: Sequence[int],
    mode: str = "reflect",
    cval: float = 0,
) -> np.ndarray:
    """What ``extract_patch(whole, start, size, mode, cval)`` gives for a volume of spatial
    ``shape`` that ``read(box)`` reads by box (``(..., *box size)``), reading one box."""
    window = Window.plan(shape, start, size, mode)
    return window.take(read(window.box), cval)
