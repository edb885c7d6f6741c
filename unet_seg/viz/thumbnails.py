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
    """``z -> (Y, X)`` slices of ``image`` (array-like: a numpy array or a lazy volume) whose
    spatial shape is ``shape`` ``(Y, X)`` or ``(Z, Y, X)``; a leading channel axis shows channel
    0. ``ValueError`` if the shapes do not fit."""
    channel = tuple(image.shape) != tuple(shape)
    if channel and tuple(image.shape[1:]) != tuple(shape):
        raise ValueError(f"image shape {tuple(image.shape)} does not fit labels of shape {shape}")
    lead = (0,) if channel else ()
    if len(shape) == 2:
        return lambda z: np.asarray(image[(*lead, Ellipsis)])
    return lambda z: np.asarray(image[(*lead, int(z))])


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
    """
    if pred.shape != truth.shape or pred.ndim not in (2, 3):
        raise ValueError(f"expected 2D/3D labels of one shape, got {pred.shape} and {truth.shape}")
    read = image_reader(image, truth.shape) if image is not None else None
    plane = truth.shape[-2:]
    stack_pred, stack_truth = pred.reshape(-1, *plane), truth.reshape(-1, *plane)
    step = subsample_step(plane, max_side)
    small_pred, small_truth = stack_pred[:, ::step, ::step], stack_truth[:, ::step, ::step]
    depth = len(stack_truth)
    errors = np.count_nonzero((stack_pred != stack_truth).reshape(depth, -1), axis=1)
    foreground = np.count_nonzero(stack_truth.reshape(depth, -1), axis=1)
    chosen = representative_slices(foreground, errors, num_slices)
    if read is None:
        images = [np.zeros(small_truth.shape[1:], np.float32) for _ in chosen]
    else:
        images = [np.asarray(read(z), np.float32)[::step, ::step] for z in chosen]
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
