"""Loading the network of a bioimage.io model package that ``unet-seg-export`` wrote.

The package (``<name>.bioimageio.zip``, or the folder it unzips to) describes its weights in
``rdf.yaml``; the ``pytorch_state_dict`` entry names the ``UNet`` keyword arguments and a state
dict that ``torch.load(..., weights_only=True)`` reads, and ``config.unet_seg`` holds what the
``.pt`` / ``.onnx`` exports carry (percentiles, tuned instance post-processing). So predict runs
the package as the native ``UNet``, without unzipping it and without ``bioimageio.core``. The
checksum the package records for the weights is checked: a truncated download says so.

Packages of other tools have no ``config.unet_seg``; they are refused with a message that names
the tools that run any bioimage.io model.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from unet_seg.models.exported import METADATA_KEY, TUNED_KEY
from unet_seg.models.unet import UNet, unet_with_weights

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")  # the description's name in a package


def is_bioimageio_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a bioimage.io package: a ``.zip``, or a folder with ``rdf.yaml``."""
    path = Path(path)
    if path.is_dir():
        return any((path / name).is_file() for name in RDF_NAMES)
    return path.name.lower().endswith(".zip")


@contextlib.contextmanager
def _reader(path: Path) -> Iterator[Callable[[str], bytes]]:
    """``name -> bytes`` of a file in the package (zip or folder; ``KeyError`` for a missing
    one), the zip open while in use; ``ValueError`` naming ``path`` if it is no zip."""
    if path.is_dir():

        def read(name: str) -> bytes:
            try:
                return (path / name).read_bytes()
            except (FileNotFoundError, IsADirectoryError) as err:
                raise KeyError(name) from err  # as zipfile says a member is missing

        yield read
        return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{path}: not a readable bioimage.io package ({err})") from err
    with archive:
        yield archive.read


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
                data = read(str(weights["source"]))
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
        except (KeyError, TypeError, RuntimeError, yaml.YAMLError, zipfile.BadZipFile) as err:
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
        except (yaml.YAMLError, zipfile.BadZipFile) as err:
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
            rdf = yaml.safe_load(read(name))
        except KeyError:
            continue
        if not isinstance(rdf, Mapping):
            raise ValueError(f"{path}: {name} is not a YAML mapping")
        return name, rdf
    raise ValueError(f"{path}: no rdf.yaml inside: not a bioimage.io model package")
