"""Finding input files and naming output files: one set of rules for every entry point.

A *spec* names files as a file, a folder (its supported files), a glob pattern, or a list of
these. Hidden files (a leading ``.``: our own partial writes among them) are never inputs.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from unet_seg.errors import InputNotFoundError, UsageError

SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".tif", ".tiff", ".png", ".ome.zarr", ".zarr")
# Directories that are one image each: zarr arrays and OME-Zarr images.
DIRECTORY_SUFFIXES = (".ome.zarr", ".zarr")

PathSpec = str | os.PathLike | Sequence[str | os.PathLike]


def format_suffix(path: str | os.PathLike) -> str:
    """The format suffix of ``path`` in lower case (``.nii.gz`` counts as one).

    Raises:
        ValueError: ``path`` has no supported suffix (the message names the file).
    """
    path = Path(path)
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):  # .ome.zarr before .zarr
        if name.endswith(suffix):
            return suffix
    raise ValueError(
        f"{path}: unsupported file type {''.join(path.suffixes) or '(none)'}; "
        f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
    )


def is_supported(path: str | os.PathLike) -> bool:
    """``path`` has a supported suffix and is not hidden."""
    name = Path(path).name.lower()
    return not name.startswith(".") and name.endswith(SUPPORTED_SUFFIXES)


def is_directory_format(path: str | os.PathLike) -> bool:
    """``path`` names a zarr store (a directory that is one image)."""
    return Path(path).name.lower().endswith(DIRECTORY_SUFFIXES)


def is_image(path: Path) -> bool:
    """A supported file, or a zarr store directory."""
    return is_supported(path) and (path.is_file() or (is_directory_format(path) and path.is_dir()))


def stem(path: str | os.PathLike) -> str:
    """File name without its format suffix (``a.nii.gz`` -> ``a``)."""
    path = Path(path)
    return path.name[: -len(format_suffix(path))] if is_supported(path.name) else path.stem


def files_by_key(files: Sequence[Path], suffix: str = "") -> dict[str, Path]:
    """``{key: path}``: the one rule that pairs files by name. A file's key is its stem
    (:func:`stem`) without ``suffix``; files whose stem does not end with ``suffix`` are left out.

    Raises:
        UsageError: two files have the same key (``a_labels.tif`` and ``a_labels.nii.gz``, or
            ``a.tif`` and ``a.TIF``): which one is meant is not ours to guess.
    """
    keyed: dict[str, Path] = {}
    for path in files:
        name = stem(path)
        if not name.endswith(suffix):
            continue
        key = name[: len(name) - len(suffix)]
        if key in keyed and keyed[key] != path:
            raise UsageError(f"{keyed[key]} and {path} both pair as {key!r}: keep one of them")
        keyed[key] = path
    return keyed


def find_files(spec: PathSpec) -> list[Path]:
    """The files named by ``spec``, in order, each folder and glob sorted.

    An explicit file is taken whatever its suffix (reading it then says if the format is not
    supported); folders and globs contribute their supported, non-hidden files.

    Raises:
        InputNotFoundError: an item of ``spec`` matches nothing (a ``FileNotFoundError`` naming
            it; the CLIs call this a usage error).
    """
    items = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir() and not is_directory_format(path):
            found = sorted(p for p in path.iterdir() if is_image(p))
        elif path.is_file() or is_image(path):
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(str(item)) if is_image(Path(p)))
        if not found:
            raise InputNotFoundError(
                f"{item}: no image files found (a file, a folder or a glob of "
                f"{', '.join(SUPPORTED_SUFFIXES)} files)"
            )
        files += found
    return files


def output_path(
    path: str | os.PathLike, out_dir: str | os.PathLike, ending: str, suffix: str | None = None
) -> Path:
    """``out_dir / <stem><ending><suffix>``: the output of input ``path`` (suffix: the input's)."""
    return Path(out_dir) / f"{stem(path)}{ending}{suffix or format_suffix(path)}"
