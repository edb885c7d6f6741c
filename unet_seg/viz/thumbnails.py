"""Small pictures of one evaluated file for the report: a few slices of image, truth and errors.

Each slice becomes three pictures: the grey image (drawn once, shown under both overlays), the
truth in class colours and the prediction's true/false positives and false negatives. The overlays
are RGBA PNGs, exact and mostly transparent, so they compress to little; the grey image is only
context and a JPEG, a third of a PNG's size for noisy microscopy. Slices are strided to
``max_side`` pixels: a report of a hundred files stays at a few MB.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image  # matplotlib's own image writer; exact RGBA and grey, no colour map

from unet_seg.viz.overlays import (
    class_rgba,
    display_range,
    error_rgba,
    representative_slices,
    subsample_step,
    to_gray,
)


@dataclass(frozen=True)
class SliceThumbnail:
    """One slice: ``z`` (None for a 2D file), a base64 JPEG ``gray`` and base64 PNG overlays
    ``truth`` and ``errors``, all ``(height, width)``."""

    z: int | None
    height: int
    width: int
    gray: str
    truth: str
    errors: str


def png_base64(picture: np.ndarray) -> str:
    """``(Y, X, 4)`` RGBA in [0, 1] -> base64 PNG text.

    An overlay has a handful of colours, so it is stored as a palette image (one byte a pixel,
    transparency per palette entry): smaller and several times faster to encode than RGBA.
    """
    data = np.round(np.clip(picture, 0, 1) * 255).astype(np.uint8)
    packed = np.ascontiguousarray(data).view(np.uint32).ravel()  # one number per RGBA colour
    unique, index = np.unique(packed, return_inverse=True)
    colours = unique.view(np.uint8).reshape(-1, 4)
    buffer = io.BytesIO()
    if len(colours) <= 256:
        image = Image.fromarray(index.reshape(data.shape[:2]).astype(np.uint8), "L")
        image = image.convert("P")  # keeps the indices; the palette is set below
        image.putpalette(colours[:, :3].tobytes(), "RGB")
        image.save(buffer, "PNG", transparency=colours[:, 3].tobytes())
    else:
        Image.fromarray(data, "RGBA").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def jpeg_base64(gray: np.ndarray, quality: int = 80) -> str:
    """``(Y, X)`` grey in [0, 1] -> base64 JPEG text."""
    data = np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(data, "L").save(buffer, "JPEG", quality=quality)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_reader(image: Any, shape: tuple[int, ...]):
    """``(z, rows) -> (rows, X)``: rows (a slice) of plane ``z`` of ``image`` (array-like: a
    numpy array or a lazy volume) whose spatial shape is ``shape`` ``(Y, X)`` or ``(Z, Y, X)``;
    a leading channel axis shows channel 0. ``ValueError`` if the shapes do not fit."""
    channel = tuple(image.shape) != tuple(shape)
    if channel and tuple(image.shape[1:]) != tuple(shape):
        raise ValueError(f"image shape {tuple(image.shape)} does not fit labels of shape {shape}")
    lead = (0,) if channel else ()
    if len(shape) == 2:
        return lambda z, rows=slice(None): np.asarray(image[(*lead, rows)])
    return lambda z, rows=slice(None): np.asarray(image[(*lead, int(z), rows)])


def strided_plane(read, z: int, plane: tuple[int, int], step: int, chunk: int) -> np.ndarray:
    """Plane ``z`` (of ``plane`` ``(Y, X)``) through ``read`` (:func:`image_reader`), every
    ``step``-th row and column, float32; read in blocks of rows of about ``chunk`` voxels, so
    that a huge plane is never held whole."""
    height, width = plane
    rows = max(step, chunk // max(width, 1) // step * step)  # a multiple of step: same grid
    blocks = [read(z, slice(y, min(y + rows, height)))[::step, ::step]
              for y in range(0, height, rows)]  # fmt: skip
    return np.concatenate(blocks).astype(np.float32)


# Voxels compared at a time when counting a file's errors: the report's temporaries stay at a
# few MB whatever the file's size (comparing whole volumes took one byte a voxel per mask).
COUNT_CHUNK_VOXELS = 1 << 20


def _planes(labels: np.ndarray) -> np.ndarray:
    """``(Y, X)`` or ``(Z, Y, X)`` -> ``(Z, Y, X)`` view (a 2D image is one plane; no copy)."""
    return labels[None] if labels.ndim == 2 else labels


def plane_counts(
    pred: np.ndarray, truth: np.ndarray, chunk: int = COUNT_CHUNK_VOXELS
) -> tuple[np.ndarray, np.ndarray]:
    """Per plane of ``(Z, Y, X)`` ``pred`` and ``truth``: the truth's foreground voxels and the
    voxels where the two differ, ``(Z,)`` int64 each, counted over blocks of rows of at most
    ``chunk`` voxels (no temporary the size of the volume)."""
    depth, height, width = truth.shape
    rows = max(1, chunk // max(width, 1))
    foreground = np.zeros(depth, np.int64)
    errors = np.zeros(depth, np.int64)
    for z in range(depth):
        for y in range(0, height, rows):
            p, t = pred[z, y : y + rows], truth[z, y : y + rows]
            foreground[z] += np.count_nonzero(t)
            errors[z] += np.count_nonzero(p != t)
    return foreground, errors


def file_thumbnails(
    pred: np.ndarray,
    truth: np.ndarray,
    image: Any = None,
    num_slices: int = 3,
    max_side: int = 128,
) -> list[SliceThumbnail]:
    """Thumbnails of ``num_slices`` representative slices (most errors, most foreground, spread).

    ``pred`` and ``truth`` are ``(Y, X)`` or ``(Z, Y, X)`` class indices; ``image`` is the input
    of the same spatial shape (optionally channels first), or None for a black background.
    Beyond the thumbnails themselves this allocates a block of :data:`COUNT_CHUNK_VOXELS`
    compared voxels and as many rows of ``image`` at a time.
    """
    if pred.shape != truth.shape or pred.ndim not in (2, 3):
        raise ValueError(f"expected 2D/3D labels of one shape, got {pred.shape} and {truth.shape}")
    read = image_reader(image, truth.shape) if image is not None else None
    plane = truth.shape[-2:]
    stack_pred, stack_truth = _planes(pred), _planes(truth)
    step = subsample_step(plane, max_side)
    small_pred, small_truth = stack_pred[:, ::step, ::step], stack_truth[:, ::step, ::step]
    foreground, errors = plane_counts(stack_pred, stack_truth)
    chosen = representative_slices(foreground, errors, num_slices)
    if read is None:
        images = [np.zeros(small_truth.shape[1:], np.float32) for _ in chosen]
    else:  # strided before the float copy: a thumbnail's pixels, not a plane's
        images = [strided_plane(read, z, plane, step, COUNT_CHUNK_VOXELS) for z in chosen]
    lo, hi = display_range(np.stack(images))
    thumbs = []
    for z, picture in zip(chosen, images, strict=True):
        height, width = picture.shape
        thumbs.append(
            SliceThumbnail(
                z=z if truth.ndim == 3 else None,
                height=height,
                width=width,
                gray=jpeg_base64(to_gray(picture, lo, hi)),
                truth=png_base64(class_rgba(small_truth[z])),
                errors=png_base64(error_rgba(small_pred[z], small_truth[z])),
            )
        )
    return thumbs
