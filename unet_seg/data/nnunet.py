"""nnU-Net raw datasets as they are (the nnU-Net v2 layout)::

    DatasetXXX_Name/
        dataset.json          channel_names, labels, file_ending (numTraining is not needed)
        imagesTr/<case>_0000<file_ending>, <case>_0001<file_ending>, ...   one file per channel
        labelsTr/<case><file_ending>

2D datasets (PNG/TIFF images) and 3D ones (NIfTI volumes, whose spacing is read from the files)
alike. ``labels`` maps names to consecutive values from 0 (background); voxels of an ``ignore``
label are mapped to -1, the value the loss and the metrics ignore. Region-based labels (lists of
values) are not supported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unet_seg.data.datamodule import SegmentationDataModule

IGNORE_LABEL = "ignore"
IGNORED = -1  # the data module's and the loss's default ignore_index


@dataclass(frozen=True)
class NnUNetDataset:
    """What ``dataset.json`` says, checked."""

    root: Path
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    file_ending: str

    @property
    def num_classes(self) -> int:
        return sum(name != IGNORE_LABEL for name in self.labels)

    @property
    def label_map(self) -> dict[int, int] | None:
        """Stored value -> class: the identity, and the ``ignore`` label's value -> -1."""
        if IGNORE_LABEL not in self.labels:
            return None
        classes = {v: v for name, v in self.labels.items() if name != IGNORE_LABEL}
        return {**classes, self.labels[IGNORE_LABEL]: IGNORED}

    def cases(self) -> list[str]:
        """Case ids: the files of ``labelsTr`` without ``file_ending``."""
        folder = self.root / "labelsTr"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no labelsTr folder in the nnU-Net dataset")
        names = sorted(p.name for p in folder.iterdir() if p.name.endswith(self.file_ending))
        if not names:
            raise FileNotFoundError(f"{folder}: no label files ending in {self.file_ending}")
        return [name[: -len(self.file_ending)] for name in names]

    def check_images(self) -> None:
        """``FileNotFoundError`` naming the first channel file a case lacks."""
        for case in self.cases():
            for channel in range(len(self.channel_names)):
                path = self.root / "imagesTr" / f"{case}_{channel:04d}{self.file_ending}"
                if not path.is_file():
                    raise FileNotFoundError(
                        f"{path}: missing; dataset.json lists {len(self.channel_names)} channel(s)"
                    )


def read_dataset(root: str | os.PathLike) -> NnUNetDataset:
    """Read and check ``<root>/dataset.json``; errors name the file and the problem."""
    root = Path(root)
    path = root / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: data.root must be a nnU-Net DatasetXXX_Name")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    channels = meta.get("channel_names", meta.get("modality"))  # "modality": nnU-Net v1
    for key, value in (("channel_names", channels), ("labels", meta.get("labels")),
                       ("file_ending", meta.get("file_ending"))):  # fmt: skip
        if not value:
            raise ValueError(f"{path}: no {key}")
    channel_names = tuple(str(channels[k]) for k in sorted(channels, key=int))
    labels = {}
    for name, value in meta["labels"].items():
        if not isinstance(value, int):
            raise ValueError(
                f"{path}: label {name!r} is {value!r}; region-based labels are not supported"
            )
        labels[str(name)] = value
    classes = sorted(v for n, v in labels.items() if n != IGNORE_LABEL)
    if classes != list(range(len(classes))):
        raise ValueError(f"{path}: label values {classes} must be consecutive from 0")
    return NnUNetDataset(root, channel_names, labels, str(meta["file_ending"]))


def nnunet_datamodule(root: str | os.PathLike, **kwargs: Any) -> SegmentationDataModule:
    """A :class:`SegmentationDataModule` over ``root``'s ``imagesTr``/``labelsTr``, with
    ``num_classes`` and the ``ignore`` label from ``dataset.json``; ``kwargs`` as for the module
    (patch size, validation, ...)."""
    dataset = read_dataset(root)
    dataset.check_images()
    ending = dataset.file_ending
    return SegmentationDataModule(
        images=str(dataset.root / "imagesTr" / f"*{ending}"),
        labels=str(dataset.root / "labelsTr" / f"*{ending}"),
        num_classes=dataset.num_classes,
        label_map=dataset.label_map,
        ignore_index=IGNORED,
        **kwargs,
    )
