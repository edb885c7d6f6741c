"""Synthetic datasets with known spacing, sizes and objects, written as files in tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.io import Volume, write_volume
from unet_seg.planning.fingerprint import Fingerprint


def object_grid(shape: tuple[int, ...], size: tuple[int, ...], gap: int) -> np.ndarray:
    """Object ids ``(*shape)``: boxes of ``size`` on a grid, ``gap`` voxels apart (0: touching),
    starting ``gap`` voxels from the origin (2 where they touch)."""
    label = np.zeros(shape, np.uint16)
    start = max(gap, 2)
    ranges = [range(start, n - s, s + gap) for n, s in zip(shape, size, strict=True)]
    ids = 1
    for corner in np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, len(shape)):
        box = tuple(slice(c, c + s) for c, s in zip(corner, size, strict=True))
        label[box] = ids
        ids += 1
    return label


def write_dataset(
    root: Path, labels: list[np.ndarray], spacing: tuple[float, ...], suffix: str = ".tif"
) -> tuple[Path, Path]:
    """``root/images`` and ``root/labels``: one image per label, bright where the label is set;
    returns the two folders."""
    images, masks = root / "images", root / "labels"
    images.mkdir(parents=True)
    masks.mkdir()
    for i, label in enumerate(labels):
        image = np.where(label > 0, 1000, 100).astype(np.uint16)
        write_volume(images / f"case_{i}{suffix}", Volume(image, spacing=spacing))
        write_volume(masks / f"case_{i}{suffix}", Volume(label, spacing=spacing))
    return images, masks


def fingerprint(**changes: Any) -> Fingerprint:
    """A 2D fingerprint of 4 images of 256 x 256 with 12-pixel objects that do not touch, with
    ``changes`` applied (``median_shape`` also sets ``shapes``, ``spacing`` the spacings)."""
    shape = changes.pop("median_shape", [256.0, 256.0])
    spacing = changes.pop("spacing", [1.0] * len(shape))
    values = {
        "cases": 4,
        "spatial_dims": len(shape),
        "channels": 1,
        "dtype": "uint16",
        "shapes": [[int(s) for s in shape]] * 4,
        "spacings": [spacing] * 4,
        "median_shape": shape,
        "median_spacing": spacing,
        "anisotropy": max(spacing) / min(spacing),
        "intensity": [
            {
                "channel": 0,
                "mean": 300.0,
                "std": 100.0,
                "min": 0.0,
                "max": 4000.0,
                "percentiles": {"0.5": 1.0, "99.5": 3000.0},
                "foreground_percentiles": None,
            }
        ],
        "labels": {
            "kind": "objects",
            "values": [0, 1],
            "class_fraction": {"0": 0.8, "1": 0.2},
            "ignored_fraction": 0.0,
        },
        "objects": {
            "count": 100,
            "median_voxels": 100.0,
            "p90_voxels": 144.0,
            "median_extent": [10.0] * len(shape),
            "p90_extent": [12.0] * len(shape),
            "touching_fraction": 0.0,
        },
        "sampling": {"sampled": False},
        "source": {"images": "/d/images", "labels": "/d/labels"},
    }
    values.update(changes)
    return Fingerprint(**values)
