"""Images read lazily for training: channels on a leading axis, checked against their label,
and their normalisation range from a bounded subsample."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.io import LazyVolume, open_volume
from unet_seg.normalization import percentile_range


class ChannelImage:
    """An image ``(C, *spatial)`` read lazily: one file with or without a channel axis, or one
    file per channel."""

    def __init__(self, volumes: Sequence[LazyVolume], spatial_ndim: int) -> None:
        self.volumes = list(volumes)
        self.path = self.volumes[0].path
        first = self.volumes[0]
        self.channel_axis = len(self.volumes) == 1 and first.ndim == spatial_ndim + 1
        spatial = first.shape[first.ndim - spatial_ndim :]
        channels = first.shape[0] if self.channel_axis else len(self.volumes)
        self.shape = (channels, *spatial)

    def __getitem__(self, index: tuple) -> np.ndarray:
        """``(C, ...)`` of the spatial ``index`` (ints and slices) for every channel."""
        if self.channel_axis:
            return self.volumes[0][(slice(None), *index)]
        return np.stack([volume[index] for volume in self.volumes])


class _PercentileView:
    """An image ``(C, *spatial)`` seen as ``(C * Z, Y, X)`` (3D) or ``(C, Y, X)`` (2D): the
    layout :func:`percentile_range` subsamples, with every channel counted."""

    def __init__(self, image: ChannelImage) -> None:
        self.image, self.path = image, image.path
        self.shape = (math.prod(image.shape[:-2]), *image.shape[-2:])

    def __getitem__(self, index: Any) -> np.ndarray:
        if index is Ellipsis:
            return self.image[(Ellipsis,)].reshape(self.shape)
        first, *rest = index
        lead = np.unravel_index(int(first), self.image.shape[:-2])
        return self.image[(*(int(i) for i in lead[1:]), *rest)][int(lead[0])]


def open_image(image_path: Path | tuple[Path, ...], label: LazyVolume) -> ChannelImage:
    """The lazy image of a label, checked against it: one file with the label's axes or one
    more (channels first), or one file per channel with exactly the label's shape."""
    paths = (image_path,) if isinstance(image_path, Path) else tuple(image_path)
    volumes = [open_volume(p) for p in paths]
    for path, volume in zip(paths, volumes, strict=True):
        extra = volume.ndim - label.ndim
        if extra not in ((0, 1) if len(paths) == 1 else (0,)):
            raise ValueError(
                f"{path}: image of shape {volume.shape} does not fit label shape {label.shape} "
                f"of {label.path}"
            )
        if volume.shape[extra:] != label.shape:
            raise ValueError(
                f"{path}: image shape {volume.shape} does not match label shape {label.shape} "
                f"of {label.path}"
            )
    return ChannelImage(volumes, label.ndim)


def image_range(image: ChannelImage, low: float, high: float) -> tuple[float, float]:
    """The image values at the ``low``/``high`` percentiles of the whole file, from at most
    about 4 M voxels (every voxel of smaller files, so then exactly the in-memory values)."""
    return percentile_range(_PercentileView(image), low, high)
