"""Loading the network of a bioimage.io model package that ``unet-seg-export`` wrote.

The package (``<name>.bioimageio.zip``, or the folder it unzips to) describes its weights in
``rdf.yaml``; the ``pytorch_state_dict`` entry names the ``UNet`` keyword arguments and a state
dict that ``torch.load(..., weights_only=True)`` reads, and ``config.unet_seg`` holds what the
``.pt`` / ``.onnx`` exports carry (percentiles, tuned instance post-processing). So predict runs
the package as the native ``UNet``, without unzipping it and without ``bioimageio.core``. The
checksum the package records for the weights is checked: a truncated download says so.

Packages of other tools have no ``config.unet_seg``; they are refused with a message that names
the tools that run any bioimage.io model.

A package is as untrusted as a pickle: every read is bounded before anything is inflated (the
description to :data:`DESCRIPTION_MAX_BYTES`, the weights to half the available memory), a
member must be a regular file inside the package (no ``..``, no absolute path, no device, no
link out of a folder package), and the network is built only once the weights' shapes are known
to fit it. Every refusal names the package and the entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from unet_seg.io.limits import memory_budget
from unet_seg.models.exported import METADATA_KEY, TUNED_KEY
from unet_seg.models.unet import UNet, unet_with_weights

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")  # the description's name in a package
DESCRIPTION_MAX_BYTES = 16 << 20  # an rdf.yaml is a few kB; 16 MiB is no description any more


def is_bioimageio_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a bioimage.io package: a ``.zip``, or a folder with ``rdf.yaml``."""
    path = Path(path)
    if path.is_dir():
        return any((path / name).is_file() for name in RDF_NAMES)
    return path.name.lower().endswith(".zip")


def _member_name(path: Path, name: Any) -> str:
    """``name`` if it names a file inside the package, else ``ValueError`` naming both."""
    parts = Path(str(name)).parts
    if not isinstance(name, str) or not parts or Path(name).is_absolute() or ".." in parts:
        raise ValueError(f"{path}: {name!r}: refused, the entry points outside the package")
    return name


def _bounded(path: Path, name: str, size: int, limit: int, read: Callable[[int], bytes]) -> bytes:
    """``read(limit + 1)`` where the entry declares ``size`` bytes; ``ValueError`` naming the
    package and the entry when it declares or holds more than ``limit``."""
    if size > limit:
        raise ValueError(f"{path}: {name} declares {size:,} bytes, more than the {limit:,} "
                         "this entry may have")  # fmt: skip
    data = read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: {name} holds more than the {limit:,} bytes it may have")
    return data


@contextlib.contextmanager
def _reader(path: Path) -> Iterator[Callable[[str, int], bytes]]:
    """``(name, limit) -> bytes`` of a file in the package (zip or folder; ``KeyError`` for a
    missing one), read only up to ``limit`` bytes; the zip open while in use; ``ValueError``
    naming ``path`` if it is no zip, or an entry that leaves the package or is too big."""
    if path.is_dir():
        root = path.resolve()

        def read(name: str, limit: int) -> bytes:
            target = (path / _member_name(path, name)).resolve()
            if not target.is_relative_to(root):
                raise ValueError(f"{path}: {name}: refused, a link out of the package")
            try:
                info = os.stat(target)
            except FileNotFoundError as err:
                raise KeyError(name) from err  # as zipfile says a member is missing
            if stat.S_ISDIR(info.st_mode):
                raise KeyError(name)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(f"{path}: {name}: refused, not a regular file")
            with open(target, "rb") as file:
                return _bounded(path, name, info.st_size, limit, file.read)

        yield read
        return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{path}: not a readable bioimage.io package ({err})") from err

    def read_member(name: str, limit: int) -> bytes:
        member = archive.getinfo(_member_name(path, name))  # KeyError when missing
        if member.is_dir():
            raise KeyError(name)
        with archive.open(member) as file:
            return _bounded(path, name, member.file_size, limit, file.read)

    with archive:
        yield read_member


def load_package(
    path: str | os.PathLike,
) -> tuple[UNet, dict[str, float], dict[str, Any] | None]:
    """``(UNet in eval mode, normalisation percentiles, tuned instance post-processing or
    None)`` of the package at ``path``.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: not a package of ``unet-seg-export``, or a damaged one (the message says
            which file and why).
    """
    path = _existing(path)
    with _reader(path) as read:
        try:
            rdf_name, rdf = _description(read, path)
            meta = (rdf.get("config") or {}).get(METADATA_KEY)
            weights = (rdf.get("weights") or {}).get("pytorch_state_dict")
            if not isinstance(meta, Mapping) or not isinstance(weights, Mapping):
                raise ValueError(
                    f"{path}: a bioimage.io model that unet-seg-export did not write (no "
                    f"config.{METADATA_KEY} and pytorch_state_dict weights); run it with "
                    "bioimageio.core, ilastik or deepImageJ"
                )
            try:
                data = read(weights["source"], memory_budget())
            except KeyError as err:
                raise ValueError(
                    f"{path}: {weights['source']}, the weights {rdf_name} names, "
                    "is not in the package"
                ) from err
            expected = weights.get("sha256")
            if expected and hashlib.sha256(data).hexdigest() != expected:
                raise ValueError(
                    f"{path}: {weights['source']} does not match the checksum in {rdf_name} "
                    "(a damaged or incomplete download?)"
                )
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            kwargs = dict(weights.get("architecture", {}).get("kwargs") or {})
            model = unet_with_weights(kwargs, state, str(path), "described")
        except (KeyError, TypeError, RuntimeError, EOFError, yaml.YAMLError, zipfile.BadZipFile,
                zlib.error) as err:  # fmt: skip
            raise ValueError(
                f"{path}: damaged bioimage.io package ({type(err).__name__}: {err})"
            ) from err
    return model, dict(meta.get("normalization") or {}), meta.get(TUNED_KEY)


def package_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.unet_seg`` record of the package at ``path`` (what ``unet-seg-export``
    wrote: :func:`~unet_seg.models.exported.network_metadata`), without loading its weights;
    ``{}`` for a package without one.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: not a readable package.
    """
    path = _existing(path)
    with _reader(path) as read:
        try:
            _, rdf = _description(read, path)
        except (EOFError, yaml.YAMLError, zipfile.BadZipFile, zlib.error) as err:
            raise ValueError(f"{path}: damaged bioimage.io package ({err})") from err
    meta = (rdf.get("config") or {}).get(METADATA_KEY)
    return dict(meta) if isinstance(meta, Mapping) else {}


def _existing(path: str | os.PathLike) -> Path:
    """``path`` as a Path; ``FileNotFoundError`` if nothing is there."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model package {path} not found")
    return path


def _description(read, path: Path) -> tuple[str, Mapping[str, Any]]:
    """``(name, parsed YAML mapping)`` of the package's description; ``ValueError`` naming
    ``path`` if there is none or it is no mapping."""
    for name in RDF_NAMES:
        try:
            rdf = yaml.safe_load(read(name, DESCRIPTION_MAX_BYTES))
        except KeyError:
            continue
        if not isinstance(rdf, Mapping):
            raise ValueError(f"{path}: {name} is not a YAML mapping")
        return name, rdf
    raise ValueError(f"{path}: no rdf.yaml inside: not a bioimage.io model package")
