"""Image/label files -> an nnU-Net raw dataset (``DatasetXXX_Name/``: one file per channel,
``dataset.json``), to train with ``data=nnunet`` or to hand the same data to nnU-Net itself.

``python -m unet_seg.data.to_nnunet IMAGES LABELS OUT [--names background nucleus ...]``
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unet_seg.data.pairs import pair_files, pair_name
from unet_seg.data.regions import read_image
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.io.atomic import write_text_atomic
from unet_seg.io.files import PathSpec, format_suffix


def to_nnunet(
    images: PathSpec, labels: PathSpec, out: str | Path, names: Sequence[str] | None = None
) -> Path:
    """Write the pairs of ``images``/``labels`` as the nnU-Net dataset ``out``; returns ``out``.

    Images with a channel axis (one more axis than their label) give one file per channel; the
    file format and spacing are kept. ``names``: one per class, default background, class1, ...
    """
    out = Path(out)
    pairs = pair_files(images, labels)
    ending, classes, channels = format_suffix(pairs[0][1]), 0, 1
    for image_path, label_path in pairs:
        case = pair_name(image_path, label_path)
        label = read_volume(label_path)
        image = read_image(image_path, (label.array.ndim, label.array.ndim + 1))
        planes = image.array if image.array.ndim > label.array.ndim else image.array[None]
        channels = len(planes)
        for c, plane in enumerate(planes):
            write_volume(out / "imagesTr" / f"{case}_{c:04d}{ending}",
                         Volume(plane, image.affine, image.spacing))  # fmt: skip
        write_volume(out / "labelsTr" / f"{case}{ending}", label)
        classes = max(classes, int(np.max(label.array)) + 1)
    names = list(names or ["background", *(f"class{k}" for k in range(1, classes))])
    if len(names) < classes:
        raise ValueError(f"{len(names)} class names for labels up to {classes - 1}")
    meta = {
        "channel_names": {str(c): f"channel{c}" for c in range(channels)},
        "labels": {name: k for k, name in enumerate(names)},
        "numTraining": len(pairs),
        "file_ending": ending,
    }
    write_text_atomic(out / "dataset.json", json.dumps(meta, indent=2) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", help="image file, folder or glob")
    parser.add_argument("labels", help="label file, folder or glob (paired by file name)")
    parser.add_argument("out", help="the dataset folder to write, e.g. Dataset001_Nuclei")
    parser.add_argument("--names", nargs="*", help="class names, background first")
    args = parser.parse_args(argv)
    out = to_nnunet(args.images, args.labels, args.out, args.names)
    print(f"wrote the nnU-Net dataset {out}")


if __name__ == "__main__":
    main()
