"""Pairing image files with their label files by file stem.

An image is one file (channels, if any, on its leading axis), or, in nnU-Net's naming, one file
per channel: ``<case>_0000``, ``<case>_0001``, ... beside the label ``<case>``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from unet_seg.io.files import PathSpec, find_files, stem

ImageFiles = Path | tuple[Path, ...]  # one file, or one file per channel
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


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
    """Images and labels matched by file stem (one file each also pairs, whatever the names);
    channel files ``<case>_0000, <case>_0001, ...`` pair as one image with the label ``<case>``."""
    image_files, label_files = find_files(images), find_files(labels)
    if len(image_files) == len(label_files) == 1:
        return [(image_files[0], label_files[0])]
    by_stem = {stem(p): p for p in label_files}
    channels = _channel_files(image_files, set(by_stem) - {stem(p) for p in image_files})
    pairs: list[tuple[ImageFiles, Path]] = [
        (files, by_stem[case]) for case, files in sorted(channels.items())
    ]
    grouped = {path for files in channels.values() for path in files}
    for image in image_files:
        if image in grouped:
            continue
        if stem(image) not in by_stem:
            raise ValueError(f"{image}: no label file named {stem(image)}.* in {labels}")
        pairs.append((image, by_stem[stem(image)]))
    return pairs
