"""Thumbnails of a file too big to hold: only the slices shown are read, strided.

:func:`~unet_seg.viz.thumbnails.file_thumbnails` takes whole label arrays. Here the slices are
chosen from per-slice counts gathered while the file was evaluated slab by slab
(:func:`~unet_seg.viz.overlays.representative_slices`), and each chosen slice's labels and image
are read every ``step``-th row and column only, through a reader and a lazy volume: a picture of
a 40000 x 40000 image reads about its 128 x 128 pixels' worth of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from unet_seg.viz.overlays import (
    class_rgba,
    display_range,
    error_rgba,
    representative_slices,
    subsample_step,
    to_gray,
)
from unet_seg.viz.thumbnails import SliceThumbnail, jpeg_base64, png_base64

# (z, step) -> (prediction, truth) class maps of slice z (None: the 2D image), strided by step
LabelReader = Callable[[int | None, int], tuple[np.ndarray, np.ndarray]]


def strided_image(image: Any, shape: Sequence[int], z: int | None, step: int) -> np.ndarray:
    """Slice ``z`` (None for 2D) of ``image`` (an array or a lazy volume of spatial ``shape``
    ``(Y, X)`` or ``(Z, Y, X)``, optionally channels first: channel 0), every ``step``-th row
    and column, float32. ``ValueError`` if the shapes do not fit."""
    shape = tuple(shape)
    channel = tuple(image.shape) != shape
    if channel and tuple(image.shape[1:]) != shape:
        raise ValueError(f"image shape {tuple(image.shape)} does not fit labels of shape {shape}")
    index = (*((0,) if channel else ()), *(() if z is None else (int(z),)))
    stride = slice(None, None, step)
    return np.asarray(image[(*index, stride, stride)], np.float32)


def chosen_thumbnails(
    shape: Sequence[int],
    foreground: Sequence[int],
    errors: Sequence[int],
    read_labels: LabelReader,
    image: Any = None,
    num_slices: int = 3,
    max_side: int = 128,
) -> list[SliceThumbnail]:
    """Thumbnails of labels of spatial ``shape`` ``(Y, X)`` or ``(Z, Y, X)``: ``num_slices``
    representative slices by the truth's ``foreground`` and the wrong voxels ``errors`` per
    slice (one entry for a 2D image), each read through ``read_labels`` and ``image``."""
    if len(shape) not in (2, 3):
        raise ValueError(f"expected 2D/3D labels, got shape {tuple(shape)}")
    volume = len(shape) == 3
    step = subsample_step(shape, max_side)
    chosen = representative_slices(foreground, errors, num_slices)
    labels = [read_labels(z if volume else None, step) for z in chosen]
    if image is None:
        images = [np.zeros(truth.shape, np.float32) for _, truth in labels]
    else:
        images = [strided_image(image, shape, z if volume else None, step) for z in chosen]
    lo, hi = display_range(np.stack(images))
    return [
        SliceThumbnail(
            z=z if volume else None,
            height=picture.shape[0],
            width=picture.shape[1],
            gray=jpeg_base64(to_gray(picture, lo, hi)),
            truth=png_base64(class_rgba(truth)),
            errors=png_base64(error_rgba(pred, truth)),
        )
        for z, picture, (pred, truth) in zip(chosen, images, labels, strict=True)
    ]
