"""Pairing image files with their label files by file stem."""

from __future__ import annotations

from pathlib import Path

from unet_seg.io.files import PathSpec, find_files, stem


def pair_files(images: PathSpec, labels: PathSpec) -> list[tuple[Path, Path]]:
    """Images and labels matched by file stem (one file each also pairs, whatever the names)."""
    image_files, label_files = find_files(images), find_files(labels)
    if len(image_files) == len(label_files) == 1:
        return [(image_files[0], label_files[0])]
    by_stem = {stem(p): p for p in label_files}
    pairs = []
    for image in image_files:
        if stem(image) not in by_stem:
            raise ValueError(f"{image}: no label file named {stem(image)}.* in {labels}")
        pairs.append((image, by_stem[stem(image)]))
    return pairs
