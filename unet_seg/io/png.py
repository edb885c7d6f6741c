"""PNG through imageio: 2D only (grey, or RGB/RGBA moved to a leading channel axis), spacing 1.

PNGs are small, so "opening lazily" reads the whole image into memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unet_seg.io.lazy import InMemoryVolume
from unet_seg.io.volume import Volume


def read_png(path: Path) -> Volume:
    import imageio.v3 as iio

    array = np.asarray(iio.imread(path))
    if array.ndim == 3:  # (y, x, RGB[A]) -> (C, y, x)
        array = np.moveaxis(array, -1, 0)
    return Volume(array, spacing=(1.0, 1.0), metadata={}, path=path)


def open_png(path: Path) -> InMemoryVolume:
    return InMemoryVolume(read_png(path))


def write_png(tmp: Path, volume: Volume) -> None:
    import imageio.v3 as iio

    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    if array.dtype not in (np.uint8, np.uint16) or array.ndim not in (2, 3):
        raise ValueError(f"PNG holds 2D uint8/uint16 images, got {array.dtype} {array.shape}")
    if array.ndim == 3:
        if array.dtype != np.uint8:
            raise ValueError(f"PNG colour images are written as uint8 only, got {array.dtype}")
        array = np.moveaxis(array, 0, -1)
    iio.imwrite(tmp, array, extension=".png")
