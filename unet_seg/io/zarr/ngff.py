"""OME-NGFF metadata of the stores the project writes: the multiscale pyramid (nearest for label
images, mean for the rest), the ``multiscales`` metadata written through ``ome-zarr-models``
(validated against the spec, never by hand), channel names (``omero``) on probabilities and the
``labels/`` group of an image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unet_seg import __version__
from unet_seg.io.zarr.store import NGFF_UNITS

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


# How build_pyramid makes each level: NGFF's recommended multiscales "type" and "metadata".
PYRAMID_METHODS = {
    True: ("nearest", "every other voxel in y and x: labels keep exactly their values"),
    False: ("mean", "the mean of 2 x 2 voxels in y and x"),
}
# Class colours of label images (RGB; class 0, the background, is transparent).
CLASS_COLOURS = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
)  # fmt: skip


def class_label_mark(classes: int) -> dict:
    """The NGFF ``image-label`` colours and properties of a class map with ``classes`` classes:
    class 0 is the transparent background, the others cycle through :data:`CLASS_COLOURS`."""
    colours = [{"label-value": 0, "rgba": [0, 0, 0, 0]}]
    colours += [{"label-value": k, "rgba": [*CLASS_COLOURS[(k - 1) % len(CLASS_COLOURS)], 255]}
                for k in range(1, classes)]  # fmt: skip
    names = [{"label-value": k, "class": "background" if k == 0 else f"class {k}"}
             for k in range(classes)]  # fmt: skip
    return {"colors": colours, "properties": names}


def class_names(classes: int) -> list[str]:
    """The names of ``classes`` classes as the label images' ``image-label`` properties give
    them (``background``, ``class 1``, ...): the probabilities' channel names."""
    return [p["class"] for p in class_label_mark(classes)["properties"]]


def channel_metadata(names: Sequence[str], top: float) -> dict:
    """NGFF ``omero`` metadata naming the channels of an image whose values span ``[0, top]``
    (probabilities: ``1``, or ``255`` stored as uint8), validated by ``ome-zarr-models``;
    colours as :func:`class_label_mark`'s (the background grey)."""
    from ome_zarr_models.common.omero import Omero

    channels = []
    for k, name in enumerate(names):
        rgb = CLASS_COLOURS[(k - 1) % len(CLASS_COLOURS)] if k else (128, 128, 128)
        channels.append({
            "label": str(name), "color": "".join(f"{c:02X}" for c in rgb), "active": True,
            "window": {"min": 0.0, "max": float(top), "start": 0.0, "end": float(top)},
        })  # fmt: skip
    return Omero.model_validate({"channels": channels}).model_dump(exclude_none=True, by_alias=True)


def _image_label(version: str, mark: dict) -> dict:
    """``image-label`` metadata validated by ``ome-zarr-models`` for NGFF ``version``."""
    if str(version) == "0.4":
        from ome_zarr_models.v04.image_label_types import Label
    else:
        from ome_zarr_models.v05.image_label_types import Label
    label = Label.model_validate({**mark, "version": str(version)})
    return label.model_dump(exclude_none=True, by_alias=True)


def _set_image_label(group, version: str, mark: dict) -> None:
    """Merge ``mark`` into the ``image-label`` metadata of ``group`` (where NGFF ``version``
    keeps it: the attributes in 0.4, their ``ome`` key in 0.5)."""
    if str(version) == "0.4":
        group.attrs["image-label"] = _image_label(version, {**group.attrs.get("image-label", {}),
                                                            **mark})  # fmt: skip
    else:
        ome = dict(group.attrs.get("ome", {}))
        ome["image-label"] = _image_label(version, {**ome.get("image-label", {}), **mark})
        group.attrs["ome"] = ome


def write_ome_metadata(
    root: Path, levels: Sequence[str], axes: Sequence[dict], ome: dict, zarr_format: int,
    nearest: bool = False, label_mark: dict | None = None,
) -> None:  # fmt: skip
    """Write the multiscales metadata of the levels at ``root`` through ``ome-zarr-models``
    (validated against the NGFF spec of ``ome["version"]``), with the pyramid's method
    (``nearest``: :func:`build_pyramid`'s for label images). With ``label_mark`` (``{}``, or
    :func:`class_label_mark`'s colours and properties) the store is also marked as a label image
    (``image-label``), so readers such as napari's open it as labels. ``ome["channel_names"]``
    (one per channel of a leading channel axis, e.g. the classes of probabilities) names the
    channels in ``omero``."""
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
    # The axes before the space axes (time, channel): the step an axis carries as "scale" (a
    # time axis, as the input had it), else 1.
    lead = [float(a.get("scale", 1.0)) for a in axes[: len(axes) - len(spatial)]]
    arrays = [group[level] for level in levels]
    scales = []
    for array in arrays:
        factors = [a / b for a, b in zip(arrays[0].shape[-2:], array.shape[-2:], strict=True)]
        level_scale = [*spatial[:-2], spatial[-2] * factors[0], spatial[-1] * factors[1]]
        scales.append(lead + level_scale)
    axis_models = []
    for a in axes:
        unit = a.get("unit")
        # as the input has it: an axis without a unit keeps none (never an invented micrometer)
        unit = NGFF_UNITS.get(unit, unit) if a.get("type") == "space" else unit
        axis_models.append(Axis(name=a["name"], type=a.get("type"), unit=unit))
    image = Image.new(
        array_specs=[ArraySpec.from_array(a) for a in arrays], paths=list(levels),
        axes=axis_models, scales=scales, translations=[None] * len(levels),
        name=ome.get("name"), multiscale_type=PYRAMID_METHODS[nearest][0],
        metadata={"description": PYRAMID_METHODS[nearest][1],
                  "method": "unet_seg.io.zarr.ngff.build_pyramid", "version": __version__},
    )  # fmt: skip
    attributes = image.attributes.model_dump(exclude_none=True, by_alias=True)
    names = ome.get("channel_names")
    channel = [k for k, a in enumerate(axes) if a.get("type") == "channel"]
    if names and channel and len(names) == arrays[0].shape[channel[0]]:
        top = 255.0 if arrays[0].dtype == np.uint8 else 1.0
        omero = channel_metadata(names, top)
        if str(ome["version"]) == "0.4":
            attributes["omero"] = omero
        else:
            attributes["ome"]["omero"] = omero
    group.attrs.update(attributes)
    if label_mark is not None:
        _set_image_label(group, ome["version"], label_mark)


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
    if fmt == 2:
        names = list(labels.attrs.get("labels", []))
        labels.attrs["labels"] = [*names, name] if name not in names else names
    else:
        ome = dict(labels.attrs.get("ome", {"version": str(version)}))
        names = list(ome.get("labels", []))
        ome["labels"] = [*names, name] if name not in names else names
        labels.attrs["ome"] = ome
    _set_image_label(label, version, {"source": {"image": "../../"}})
