"""A foreground mask at any resolution that lets empty blocks skip the network (as Cellpose's
distributed mode does): a mask image (non-zero = foreground), or an intensity threshold on a
coarse level of an OME-Zarr input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.io import open_volume
from unet_seg.io.zarr.store import ZarrVolume


@dataclass(frozen=True)
class ForegroundMask:
    """``mask`` ``(z, y, x)`` bool at its own resolution over a volume of ``volume_shape``
    (both in the tiling's ``(Z, Y, X)`` order); each mask voxel covers a box of the volume."""

    mask: np.ndarray
    volume_shape: tuple[int, int, int]

    def any_in(self, region: Sequence[tuple[int, int]]) -> bool:
        """Whether any mask voxel overlapping ``region`` (``(start, stop)`` per axis) is set."""
        index = []
        for (a, b), m, s in zip(region, self.mask.shape, self.volume_shape, strict=True):
            index.append(slice(a * m // s, max(a * m // s + 1, -(-b * m // s))))
        return bool(self.mask[tuple(index)].any())

    @property
    def fraction(self) -> float:
        return float(self.mask.mean())


def tiling_order(array: np.ndarray, spatial_dims: int, slice_axis: int) -> np.ndarray:
    """A ``(*spatial)`` file-order array in the tiling's ``(Z, Y, X)`` order."""
    if spatial_dims == 2:
        return array[None]
    return np.moveaxis(array, slice_axis, 0)


def load_mask(
    cfg: Any, volume: Any, layout: Any, volume_shape: tuple[int, int, int]
) -> ForegroundMask | None:
    """The mask of ``cfg`` (``mask.path``, or ``mask.threshold`` on level ``mask.level`` of the
    input, -1: the coarsest), or ``None`` when neither is set."""
    if not cfg or (cfg.get("path") is None and cfg.get("threshold") is None):
        return None
    if cfg.get("path") is not None:
        with open_volume(Path(str(cfg["path"]))) as source:
            mask = np.asarray(source[...]) != 0
        where = str(cfg["path"])
    else:
        if not isinstance(volume, ZarrVolume) or "ome" not in volume.metadata:
            raise ValueError(
                f"{getattr(volume, 'path', '')}: mask.threshold needs an OME-Zarr input with a "
                "pyramid; give mask.path instead"
            )
        level = int(cfg.get("level") if cfg.get("level") is not None else -1)
        levels = volume.metadata["ome"].get("levels", 1)
        coarse = ZarrVolume(volume.path, level % levels)
        data = np.asarray(coarse[...])
        if layout.channels:  # the channel the model reads, else the brightest of them
            data = data[layout.channel] if layout.channel is not None else data.max(axis=0)
        mask = data > float(cfg["threshold"])
        where = f"{volume.path} level {level % levels}"
    spatial = len(volume_shape) if layout.spatial_dims == 3 else 2
    if mask.ndim != spatial:
        raise ValueError(f"{where}: a mask of shape {mask.shape} for a {spatial}D input")
    return ForegroundMask(tiling_order(mask, layout.spatial_dims, layout.slice_axis), volume_shape)
