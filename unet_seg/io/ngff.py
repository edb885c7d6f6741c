"""OME-NGFF metadata of the stores the project writes: the multiscale pyramid (nearest for label
images, mean for the rest), the ``multiscales`` metadata written through ``ome-zarr-models``
(validated against the spec, never by hand) and the ``labels/`` group of an image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unet_seg.io.zarr import NGFF_UNITS, SPACE_UNIT

PYRAMID_MAX_LEVELS = 4  # a small pyramid: napari opens any zoom without a big extra cost
PYRAMID_MIN_PLANE = 256  # no level smaller than this in y and x


def _zarr():
    import zarr  # imported where a store is written, not by every unet_seg import

    return zarr


def _downsample(block: np.ndarray, nearest: bool) -> np.ndarray:
    """Halve the last two axes: every other voxel (labels) or the mean of 2x2 (edge replicated)."""
    if nearest:
        return block[..., ::2, ::2]
    pad = [(0, 0)] * (block.ndim - 2) + [(0, block.shape[-2] % 2), (0, block.shape[-1] % 2)]
    data = np.pad(block.astype(np.float32), pad, mode="edge")
    mean = sum(data[..., i::2, j::2] for i in (0, 1) for j in (0, 1)) / 4
    return np.rint(mean) if np.issubdtype(block.dtype, np.integer) else mean


def build_pyramid(root: Path, nearest: bool) -> list[str]:
    """Add levels ``1, 2, ...`` to the store at ``root`` (level ``0`` exists), each halving y and
    x, chunk by chunk (memory: one chunk of each level); returns the level paths."""
    zarr = _zarr()
    group = zarr.open_group(str(root), mode="r+")
    source = group["0"]
    levels = ["0"]
    while len(levels) < PYRAMID_MAX_LEVELS + 1 and min(source.shape[-2:]) >= 2 * PYRAMID_MIN_PLANE:
        shape = (*source.shape[:-2], -(-source.shape[-2] // 2), -(-source.shape[-1] // 2))
        extra = {}
        if group.metadata.zarr_format == 3:
            extra["dimension_names"] = source.metadata.dimension_names
        name = str(len(levels))
        target = group.create_array(
            name, shape=shape, dtype=source.dtype, chunks=source.chunks,
            fill_value=0, overwrite=True, **extra,
        )  # fmt: skip
        grid = [range(0, s, c) for s, c in zip(shape, target.chunks, strict=True)]
        for start in np.ndindex(*[len(g) for g in grid]):
            box = tuple(
                slice(g[i], min(g[i] + c, s))
                for g, i, c, s in zip(grid, start, target.chunks, shape, strict=True)
            )
            src = (*box[:-2], *(slice(2 * b.start, 2 * b.stop) for b in box[-2:]))
            target[box] = _downsample(source[src], nearest).astype(source.dtype)
        source = target
        levels.append(name)
    return levels


def write_ome_metadata(
    root: Path, levels: Sequence[str], axes: Sequence[dict], ome: dict, zarr_format: int
) -> None:
    """Write the multiscales metadata of the levels at ``root`` through ``ome-zarr-models``
    (validated against the NGFF spec of ``ome["version"]``)."""
    zarr = _zarr()
    group = zarr.open_group(str(root), mode="r+")
    if str(ome["version"]) == "0.4":
        from ome_zarr_models.v04 import Image
        from ome_zarr_models.v04.axes import Axis
        from pydantic_zarr.v2 import ArraySpec
    else:
        from ome_zarr_models.v05 import Image
        from ome_zarr_models.v05.axes import Axis
        from pydantic_zarr.v3 import ArraySpec
    spatial = [float(s) for s in ome["scale"]]
    arrays = [group[level] for level in levels]
    scales = []
    for array in arrays:
        factors = [a / b for a, b in zip(arrays[0].shape[-2:], array.shape[-2:], strict=True)]
        level_scale = [*spatial[:-2], spatial[-2] * factors[0], spatial[-1] * factors[1]]
        scales.append([1.0] * (len(axes) - len(spatial)) + level_scale)
    axis_models = []
    for a in axes:
        unit = a.get("unit")
        unit = NGFF_UNITS.get(unit, unit) if a.get("type") == "space" else unit
        unit = unit or (SPACE_UNIT if a.get("type") == "space" else None)
        axis_models.append(Axis(name=a["name"], type=a.get("type"), unit=unit))
    image = Image.new(
        array_specs=[ArraySpec.from_array(a) for a in arrays], paths=list(levels),
        axes=axis_models, scales=scales, translations=[None] * len(levels),
        name=ome.get("name"),
    )  # fmt: skip
    group.attrs.update(image.attributes.model_dump(exclude_none=True, by_alias=True))


def label_group_path(image: str | os.PathLike, name: str) -> Path:
    """Where a label image ``name`` of an OME-Zarr ``image`` lives: ``image/labels/name``."""
    return Path(image) / "labels" / name


def register_label_image(image: str | os.PathLike, name: str, version: str) -> None:
    """Mark ``image/labels/name`` as a label image of ``image`` (NGFF ``labels`` spec): the
    ``labels`` group lists it, its own group gets ``image-label`` pointing at the image."""
    zarr = _zarr()
    fmt = 2 if str(version) == "0.4" else 3
    labels = zarr.open_group(str(Path(image) / "labels"), mode="a", zarr_format=fmt)
    label = zarr.open_group(str(Path(image) / "labels" / name), mode="r+")
    mark = {"version": str(version), "source": {"image": "../../"}}
    if fmt == 2:
        names = list(labels.attrs.get("labels", []))
        labels.attrs["labels"] = [*names, name] if name not in names else names
        label.attrs["image-label"] = mark
    else:
        ome = dict(labels.attrs.get("ome", {"version": str(version)}))
        names = list(ome.get("labels", []))
        ome["labels"] = [*names, name] if name not in names else names
        labels.attrs["ome"] = ome
        label.attrs["ome"] = {**dict(label.attrs["ome"]), "image-label": mark}
