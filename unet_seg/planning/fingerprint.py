"""The dataset fingerprint: what the planner needs to know about the images and labels, measured
once and written to JSON (after nnU-Net's fingerprint extractor).

Spacing and anisotropy, image sizes, channels, dtype, intensity statistics per channel, class
frequencies, object sizes and extents, whether distinct objects touch, and how the data were read:
whole, or sampled by :mod:`unet_seg.planning.regions` (``sampling.sampled`` says so, with the voxels
read and the seed). Files are opened lazily; nothing larger than one box is ever in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.data.labels import OBJECTS, map_labels
from unet_seg.data.pairs import ImageFiles, pair_files
from unet_seg.io.atomic import write_json_atomic
from unet_seg.io.volume import check_finite
from unet_seg.io.volumes import open_volume
from unet_seg.planning.regions import SAMPLE_BOXES, WHOLE_VOXELS, plan_regions
from unet_seg.planning.statistics import CLASSES, Accumulator

VERSION = 1
# More distinct label values than this in the first case, and no label_map: the labels are
# object ids (Cellpose, StarDist masks), not classes.
MAX_CLASS_VALUES = 10


@dataclass
class Fingerprint:
    """What :func:`fingerprint_pairs` measured. Shapes and spacings are spatial, array order
    ``(z, y, x)`` or ``(y, x)``; ``anisotropy`` is the largest over the smallest median spacing."""

    cases: int
    spatial_dims: int
    channels: int
    dtype: str
    shapes: list[list[int]]
    spacings: list[list[float]]
    median_shape: list[float]
    median_spacing: list[float]
    anisotropy: float
    intensity: list[dict[str, Any]]
    labels: dict[str, Any]
    objects: dict[str, Any]
    sampling: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fingerprint:
        return cls(**dict(data))

    def write(self, path: str | os.PathLike) -> Path:
        """Indented JSON at ``path``, written atomically."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: str | os.PathLike) -> Fingerprint:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{path}: not a fingerprint file ({err})") from err


def _files(image: ImageFiles) -> tuple[Path, ...]:
    return (image,) if isinstance(image, Path) else tuple(image)


def _open_case(image: ImageFiles, label: Path) -> tuple[list, Any, int]:
    """The opened channel volumes, the opened label and the number of channels; ``ValueError``
    naming the file whose shape does not fit its label."""
    lab = open_volume(label)
    if lab.ndim not in (2, 3):
        raise ValueError(f"{label}: labels must be 2D or 3D, got shape {lab.shape}")
    volumes = [open_volume(p) for p in _files(image)]
    if len(volumes) == 1 and volumes[0].ndim == lab.ndim + 1:
        channels = volumes[0].shape[0]
        spatial = volumes[0].shape[1:]
    else:
        channels, spatial = len(volumes), None
    for vol in volumes:
        shape = spatial if spatial is not None else vol.shape
        if tuple(shape) != lab.shape:
            raise ValueError(
                f"{vol.path}: image shape {vol.shape} does not match its label {label} {lab.shape}"
            )
    return volumes, lab, int(channels)


def _read_image(volumes: list, box: tuple[slice, ...], channels: int) -> np.ndarray:
    """``(C, *box)`` from one file with a channel axis or from one file per channel."""
    if len(volumes) == 1 and volumes[0].ndim == len(box) + 1:
        data = volumes[0][(slice(0, channels), *box)]
    else:
        data = np.stack([vol[box] for vol in volumes])
    check_finite(data, volumes[0].path)
    return data


def _kind(label_map: Any, lab: Any, boxes: Sequence[tuple[slice, ...]]) -> tuple[str, str]:
    """``(kind, why)``: object ids or classes, by ``label_map`` or by the number of distinct
    values in the boxes of the first label (read until more than :data:`MAX_CLASS_VALUES`)."""
    if label_map == OBJECTS:
        return OBJECTS, "label_map=objects: the labels are object ids"
    if label_map is not None:
        return CLASSES, "a label_map maps stored values to classes"
    values: set = set()
    for box in boxes:
        values.update(np.unique(lab[box]).tolist())
        if len(values) > MAX_CLASS_VALUES + 1:  # + background
            return OBJECTS, (
                f"{lab.path.name} holds more than {MAX_CLASS_VALUES} distinct "
                "non-zero values: object ids"
            )
    return CLASSES, f"{lab.path.name} holds {len(values)} distinct values: classes"


def fingerprint_pairs(
    pairs: Sequence[tuple[ImageFiles, Path]],
    label_map: Mapping[Any, int] | str | None = None,
    ignore: Sequence[int] = (),
    seed: int = 0,
    whole_voxels: int = WHOLE_VOXELS,
    boxes: int = SAMPLE_BOXES,
    source: Mapping[str, Any] | None = None,
) -> Fingerprint:
    """The fingerprint of image/label ``pairs`` (as :func:`unet_seg.data.pairs.pair_files` gives).

    ``label_map`` as the data module's (``"objects"``, a ``{stored: class}`` map, or None: object
    ids when the first case holds more than :data:`MAX_CLASS_VALUES` values); class values in
    ``ignore`` (after the map) are left out of frequencies and objects. Cases above
    ``whole_voxels`` voxels are sampled with ``boxes`` boxes each (seeded by ``seed``).

    Raises:
        ValueError: no pairs, unreadable files, shapes or channels that do not match (the
            message names the file).
    """
    if not pairs:
        raise ValueError("no image/label pairs to fingerprint")
    shapes, spacings, dtypes = [], [], set()
    accumulator: Accumulator | None = None
    kind_reason, sampled, read, total = "", 0, 0, 0
    for index, (image, label) in enumerate(pairs):
        volumes, lab, channels = _open_case(image, label)
        if shapes and lab.ndim != len(shapes[0]):
            raise ValueError(
                f"{label}: {lab.ndim}D labels, but {pairs[0][1]} is {len(shapes[0])}D: plan 2D "
                "images and 3D volumes apart"
            )
        if accumulator is not None and channels != accumulator.channels:
            raise ValueError(
                f"{volumes[0].path}: {channels} channel(s), but the first image has "
                f"{accumulator.channels}: every image must have the same channels"
            )
        chunks = lab.metadata.get("chunks") or volumes[0].metadata.get("chunks")
        chunks = tuple(chunks)[-lab.ndim :] if chunks else None
        regions = plan_regions(lab.shape, chunks, seed, index, whole_voxels, boxes)
        if accumulator is None:
            kind, kind_reason = _kind(label_map, lab, regions.boxes)
            accumulator = Accumulator(channels, kind, ignore, seed)
        for box in regions.boxes:
            stored = lab[box]
            mapped = (
                stored if label_map in (None, OBJECTS) else map_labels(stored, label_map, label)
            )
            accumulator.add(_read_image(volumes, box, channels), mapped)
        accumulator.end_case()
        shapes.append(list(lab.shape))
        spacing = volumes[0].spacing[-lab.ndim :] if volumes[0].spacing else lab.spacing
        spacings.append([float(s) for s in spacing])
        dtypes.add(str(volumes[0].dtype))
        sampled += not regions.whole
        read += regions.voxels_read
        total += regions.voxels_total
    median_spacing = [float(v) for v in np.median(np.array(spacings), axis=0)]
    summary = accumulator.summary()
    summary["labels"]["kind_reason"] = kind_reason
    return Fingerprint(
        cases=len(pairs),
        spatial_dims=len(shapes[0]),
        channels=accumulator.channels,
        dtype=sorted(dtypes)[0] if len(dtypes) == 1 else ",".join(sorted(dtypes)),
        shapes=shapes,
        spacings=spacings,
        median_shape=[float(v) for v in np.median(np.array(shapes), axis=0)],
        median_spacing=median_spacing,
        anisotropy=float(max(median_spacing) / min(median_spacing)),
        intensity=summary["intensity"],
        labels=summary["labels"],
        objects=summary["objects"],
        sampling={
            "sampled": sampled > 0,
            "cases_sampled": sampled,
            "voxels_read": read,
            "voxels_total": total,
            "seed": seed,
            "boxes_per_case": boxes,
            "whole_voxels": whole_voxels,
        },
        source=dict(source or {}),
    )


def fingerprint_data(
    images: Any = None,
    labels: Any = None,
    root: str | os.PathLike | None = None,
    label_map: Mapping[Any, int] | str | None = None,
    seed: int = 0,
    whole_voxels: int = WHOLE_VOXELS,
    boxes: int = SAMPLE_BOXES,
) -> Fingerprint:
    """The fingerprint of a folder pair (``images``, ``labels``: as ``data.images`` and
    ``data.labels`` of ``conf/data/folder.yaml``) or of a nnU-Net raw dataset (``root``)."""
    if root is not None:
        # data.nnunet loads the Lightning data module: only when a nnU-Net dataset is planned.
        from unet_seg.data.nnunet import IGNORED, read_dataset

        dataset = read_dataset(root)
        dataset.check_images()
        ending = dataset.file_ending
        pairs = pair_files(
            str(dataset.root / "imagesTr" / f"*{ending}"),
            str(dataset.root / "labelsTr" / f"*{ending}"),
        )
        source = {
            "root": str(Path(root).absolute()),
            "channel_names": list(dataset.channel_names),
            "num_classes": dataset.num_classes,
        }
        mapping = dataset.label_map or {v: v for v in dataset.labels.values()}
        return fingerprint_pairs(pairs, mapping, (IGNORED,), seed, whole_voxels, boxes, source)
    if images is None or labels is None:
        raise ValueError("give data.images and data.labels, or data.root of a nnU-Net dataset")
    pairs = pair_files(images, labels)
    source = {"images": _absolute(images), "labels": _absolute(labels), "label_map": label_map}
    # -1: the data module's ignore_index, for label maps that send values to it
    return fingerprint_pairs(pairs, label_map, (-1,), seed, whole_voxels, boxes, source)


def _absolute(spec: Any) -> Any:
    """Paths as absolute strings, so the experiment file works from any directory."""
    if isinstance(spec, list | tuple):
        return [_absolute(s) for s in spec]
    return str(Path(str(spec)).absolute())
