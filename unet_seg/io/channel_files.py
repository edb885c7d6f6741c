"""Images stored as one file per channel, nnU-Net's ``<case>_0000``, ``<case>_0001``, ..., read
as one ``(C, *spatial)`` volume, and named after their case.

An *input* is then a file, or a tuple of the channel files of one case (:data:`InputFiles`).
:func:`group_channel_files` makes the tuples for a model of ``C`` input channels, only where a
folder is laid out that way: every file of the folder named ``<case>_<4 digits>`` and every case
holding exactly the channels ``0000 .. C-1`` (a folder of time points ``t_0000 ... t_0099`` is
left as files). Outputs are named after the case, without the channel suffix, as nnU-Net's own
prediction names them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unet_seg.io.files import format_suffix, is_directory_format, stem
from unet_seg.io.lazy import LazyVolume

InputFiles = Path | tuple[Path, ...]  # one file, or the channel files of one case in order
CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def first_file(source: InputFiles) -> Path:
    """The file of ``source``, or its channel ``0000`` file."""
    return source if isinstance(source, Path) else source[0]


def is_store(source: InputFiles) -> bool:
    """Whether ``source`` is a zarr / OME-Zarr store (a case's channel files never are)."""
    return isinstance(source, Path) and is_directory_format(source)


def naming_path(source: InputFiles) -> Path:
    """The path outputs are named after: the file, or ``<folder>/<case><suffix>`` for channel
    files (``a/case_0000.nii.gz`` -> ``a/case.nii.gz``; no such file needs to exist)."""
    if isinstance(source, Path):
        return source
    first = source[0]
    match = CHANNEL_FILE.match(stem(first))
    case = match["case"] if match else stem(first)
    return first.with_name(f"{case}{format_suffix(first)}")


def describe(source: InputFiles) -> str:
    """``source`` for messages and the run summary: the file, or the case's files joined by +."""
    if isinstance(source, Path):
        return str(source)
    return str(source[0]) + "".join(f"+{p.name}" for p in source[1:])


def group_channel_files(files: Sequence[Path], channels: int) -> list[InputFiles]:
    """``files`` with the channel files of each case made one input (see the module docstring);
    the order of first appearance is kept."""
    by_folder: dict[Path, list[Path]] = {}
    for path in files:
        by_folder.setdefault(path.parent, []).append(path)
    grouped: dict[Path, tuple[Path, ...]] = {}  # first file of a case -> its channel files
    for folder_files in by_folder.values():
        cases: dict[tuple[str, str], dict[int, Path]] = {}
        for path in folder_files:
            match = CHANNEL_FILE.match(stem(path))
            if match is None or is_directory_format(path):
                cases = {}
                break
            key = (match["case"], format_suffix(path).lower())
            cases.setdefault(key, {})[int(match["channel"])] = path
        numbered = all(sorted(c) == list(range(channels)) for c in cases.values())
        if cases and numbered:
            for by_channel in cases.values():
                paths = tuple(by_channel[c] for c in range(channels))
                grouped[paths[0]] = paths
    members = {p for paths in grouped.values() for p in paths}
    return [grouped.get(p, p) for p in files if p in grouped or p not in members]


class ChannelFiles(LazyVolume):
    """The channel files ``volumes`` (each ``(*spatial)``, one shape) as one ``(C, *spatial)``
    volume, read lazily; geometry and metadata are the first file's, with a leading ``C`` axis
    declared (``metadata["axes"]``)."""

    def __init__(self, volumes: Sequence[LazyVolume]) -> None:
        first = volumes[0]
        for volume in volumes[1:]:
            if volume.shape != first.shape:
                raise ValueError(
                    f"{volume.path}: channel file of shape {volume.shape}, but {first.path} "
                    f"has {first.shape}: the channels of a case must have one shape"
                )
        dtype = np.result_type(*(v.dtype for v in volumes))
        axes = "C" + "ZYX"[-first.ndim :]
        metadata = {**first.metadata, "axes": axes, "channels": None}
        super().__init__(first.path, (len(volumes), *first.shape), dtype, first.spacing,
                         first.affine, metadata)  # fmt: skip
        self.volumes = list(volumes)

    def _read(self, index: tuple) -> np.ndarray:
        chosen = range(len(self.volumes))[index[0]]
        if isinstance(chosen, int):
            return self.volumes[chosen][index[1:]].astype(self.dtype, copy=False)
        return np.stack([self.volumes[c][index[1:]].astype(self.dtype) for c in chosen])

    def close(self) -> None:
        for volume in self.volumes:
            volume.close()
