"""Pairing image files with their label files by file stem.

An image is one file (channels, if any, on its leading axis), or, in nnU-Net's naming, one file
per channel: ``<case>_0000``, ``<case>_0001``, ... beside the label ``<case>``. A label may also
carry one of the suffixes other tools name masks with (:data:`LABEL_SUFFIXES`: Cellpose's
``<image>_masks``, ``<image>_label``, ``<image>_seg``, ...), and then it may sit in the images'
own folder (Cellpose's layout), where the files with such a suffix are the labels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from unet_seg.io.files import PathSpec, files_by_key, find_files, stem

ImageFiles = Path | tuple[Path, ...]  # one file, or one file per channel
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
# What follows an image's stem in its label's name in common layouts (case-insensitive; "_" or
# "-" before it): Cellpose (_masks, _cp_masks), ilastik/Fiji exports (_label(s), _mask), _seg, _gt.
LABEL_SUFFIXES = ("cp_masks", "masks", "mask", "labels", "label", "seg", "gt")
_LABEL = re.compile(rf"^(?P<image>.+?)[_-](?:{'|'.join(LABEL_SUFFIXES)})$", re.IGNORECASE)


def image_stem_of(label: Path) -> str | None:
    """The image stem a label file's name points at through one of :data:`LABEL_SUFFIXES`
    (``a_masks.tif`` -> ``a``), or None."""
    match = _LABEL.match(stem(label))
    return match["image"] if match else None


def pair_name(image: ImageFiles, label: Path) -> str:
    """The name of a pair: the image's stem, or the case (the label's stem) for channel files."""
    return stem(image) if isinstance(image, Path) else stem(label)


def _channel_files(image_files: Sequence[Path], cases: set[str]) -> dict[str, tuple[Path, ...]]:
    """``{case: (channel 0 file, channel 1 file, ...)}`` for files named ``<case>_<4 digits>``;
    ``ValueError`` if a case lacks a channel or cases differ in their number of channels."""
    found: dict[str, dict[int, Path]] = {}
    for path in image_files:
        match = _CHANNEL.match(stem(path))
        if match and match["case"] in cases:
            found.setdefault(match["case"], {})[int(match["channel"])] = path
    grouped = {}
    for case, channels in found.items():
        if sorted(channels) != list(range(len(channels))):
            raise ValueError(
                f"{case}: channel files {sorted(channels)} are not numbered 0000, 0001, ... "
                f"without gaps ({channels[min(channels)].parent})"
            )
        grouped[case] = tuple(channels[c] for c in sorted(channels))
    counts = {len(files) for files in grouped.values()}
    if len(counts) > 1:
        raise ValueError(f"cases have different numbers of channel files: {sorted(counts)}")
    return grouped


def pair_files(images: PathSpec, labels: PathSpec) -> list[tuple[ImageFiles, Path]]:
    """Images and labels matched by file stem, or the label's stem with one of
    :data:`LABEL_SUFFIXES` (one file each also pairs, whatever the names); channel files
    ``<case>_0000, <case>_0001, ...`` pair as one image with the label ``<case>``.

    Raises:
        ValueError: an image without a label, or one folder for both without suffixed labels.
    """
    image_files, label_files = find_files(images), find_files(labels)
    label_of = {p: image_stem_of(p) for p in label_files}  # the image a suffixed name points at
    if set(image_files) & set(label_files):  # one folder for both: the suffixed files are labels
        label_files = [p for p in label_files if label_of[p] is not None]
        if not label_files:
            raise ValueError(
                f"{labels}: the images and labels are the same files; name each label "
                f"<image>_masks (or _{', _'.join(LABEL_SUFFIXES[2:])}) beside its image, or "
                "give the labels' own folder"
            )
        suffixed = set(label_files)
        image_files = [p for p in image_files if p not in suffixed]
    if len(image_files) == len(label_files) == 1:
        return [(image_files[0], label_files[0])]
    by_stem = files_by_key(label_files)
    by_image = {label_of[p]: p for p in label_files if label_of[p] is not None}
    channels = _channel_files(image_files, set(by_stem) - {stem(p) for p in image_files})
    pairs: list[tuple[ImageFiles, Path]] = [
        (files, by_stem[case]) for case, files in sorted(channels.items())
    ]
    grouped = {path for files in channels.values() for path in files}
    for image in image_files:
        if image in grouped:
            continue
        label = by_stem.get(stem(image)) or by_image.get(stem(image))
        if label is None:
            raise ValueError(
                f"{image}: no label file named {stem(image)}.* (or {stem(image)}_masks.* etc.) "
                f"in {labels}"
            )
        pairs.append((image, label))
    return pairs
