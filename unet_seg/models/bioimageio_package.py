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
description to :data:`DESCRIPTION_MAX_BYTES` and :data:`DESCRIPTION_MAX_VALUES`, the weights to
what the described network holds), a member must be a regular file inside the package (no
``..``, no absolute path, no device, no link out of a folder package), every part of the
description must have the type it is read as, and the network is built only once the weights'
shapes are known to fit it. Every refusal is one line naming the package and the entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from unet_seg.errors import checkpoint_load_error
from unet_seg.io.limits import memory_budget
from unet_seg.models.exported import METADATA_KEY, TUNED_KEY
from unet_seg.models.unet import UNet, unet_with_weights
from unet_seg.normalization import check_normalization

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")  # the description's name in a package
# An rdf.yaml is a few kB. YAML is parsed at well under 1 MB/s (16 MiB of short lists took
# minutes), so the bound is what parses in about a second.
DESCRIPTION_MAX_BYTES = 256 << 10
# Values of the parsed description, aliases counted each time they are used: a few hundred in
# ours; the bound stops a "billion laughs" of aliases, or a list holding itself, being walked.
DESCRIPTION_MAX_VALUES = 100_000
# A state dict's file is its tensors' bytes plus the pickle (names, shapes; ~1 kB a tensor).
WEIGHTS_SLACK_BYTES = 1 << 20
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built: ~4x faster


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
                # read(n) allocates n bytes first: never more than the file holds
                size = info.st_size
                return _bounded(path, name, size, limit, lambda n: file.read(min(n, size + 1)))

        yield read
        return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ValueError(f"{path}: not a readable bioimage.io package ({_one_line(err)})") from err

    def read_member(name: str, limit: int) -> bytes:
        member = archive.getinfo(_member_name(path, name))  # KeyError when missing
        if member.is_dir():
            raise KeyError(name)
        try:
            with archive.open(member) as file:
                # inflated at most as far as declared: a header that lies about the size is
                # found by the checksum after a few bytes, not after inflating up to the bound
                size = member.file_size
                return _bounded(path, name, size, limit, lambda n: file.read(min(n, size + 1)))
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError,
                RuntimeError) as err:  # fmt: skip
            # damaged data, a compression or encryption zipfile cannot read
            raise ValueError(f"{path}: {name}: unreadable entry ({_one_line(err)})") from err

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
            meta = _part(rdf, "config", path, rdf_name).get(METADATA_KEY)
            weights = _part(rdf, "weights", path, rdf_name).get("pytorch_state_dict")
            if not isinstance(meta, Mapping) or not isinstance(weights, Mapping):
                raise ValueError(
                    f"{path}: a bioimage.io model that unet-seg-export did not write (no "
                    f"config.{METADATA_KEY} and pytorch_state_dict weights); run it with "
                    "bioimageio.core, ilastik or deepImageJ"
                )
            normalization, tuning = _our_record(meta, path, rdf_name)
            where = "weights.pytorch_state_dict"
            architecture = _part(weights, "architecture", path, f"{rdf_name}: {where}")
            kwargs = dict(_part(architecture, "kwargs", path, f"{rdf_name}: {where}.architecture"))
            # The same-size form's mirror and trim serve tools that tile; we tile the valid net.
            kwargs.pop("mirror", None)
            kwargs.pop("trim", None)
            source = _member_name(path, weights.get("source"))  # refused first: never read
            try:
                data = read(source, _weights_limit(kwargs, path))
            except KeyError as err:
                raise ValueError(
                    f"{path}: {source}, the weights {rdf_name} names, is not in the package"
                ) from err
            expected = weights.get("sha256")
            if expected and hashlib.sha256(data).hexdigest() != expected:
                raise ValueError(
                    f"{path}: {source} does not match the checksum in {rdf_name} "
                    "(a damaged or incomplete download?)"
                )
            state = _state_dict(data, path, source)
            model = unet_with_weights(kwargs, state, str(path), "described")
        except (KeyError, TypeError, RuntimeError, EOFError, yaml.YAMLError, zipfile.BadZipFile,
                zlib.error) as err:  # fmt: skip
            raise ValueError(f"{path}: damaged bioimage.io package ({_one_line(err)})") from err
    return model, normalization, tuning


def _one_line(err: BaseException) -> str:
    """``"<type>: <message>"`` of ``err`` on one line (YAML's messages point at the text)."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _part(node: Mapping[str, Any], key: str, path: Path, where: str) -> Mapping[str, Any]:
    """``node[key]`` as a mapping (``{}`` when absent or empty); ``ValueError`` naming the
    package and the part when it is something else."""
    value = node.get(key) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{path}: {where}: {key} is a {type(value).__name__}, not a mapping")
    return value


def _our_record(
    meta: Mapping[str, Any], path: Path, rdf_name: str
) -> tuple[dict[str, float], dict[str, Any] | None]:
    """``(percentiles, tuning or None)`` of ``config.unet_seg``; ``ValueError`` naming the
    package and the part unless they are what predict uses."""
    where = f"{path}: {rdf_name}: config.{METADATA_KEY}"
    normalization = _part(meta, "normalization", path, f"{rdf_name}: config.{METADATA_KEY}")
    try:
        check_normalization(normalization)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}.normalization: {_one_line(err)}") from err
    tuning = meta.get(TUNED_KEY)
    if tuning is not None and not isinstance(tuning, Mapping):
        raise ValueError(f"{where}.{TUNED_KEY} is a {type(tuning).__name__}, not a mapping")
    return dict(normalization), None if tuning is None else dict(tuning)


def _weights_limit(kwargs: Mapping[str, Any], path: Path) -> int:
    """Bytes the weights of ``UNet(**kwargs)`` may take in the package: what its tensors hold
    (counted on PyTorch's ``meta`` device: no memory) plus the pickle's slack, at most half the
    available memory; a bigger entry is refused before it is inflated."""
    try:
        with torch.device("meta"):
            skeleton = UNet(**kwargs)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise ValueError(
            f"{path}: the described network cannot be built ({_one_line(err)})"
        ) from err
    held = sum(t.numel() * t.element_size() for t in skeleton.state_dict().values())
    return min(memory_budget(), held + held // 8 + WEIGHTS_SLACK_BYTES)


def _state_dict(data: bytes, path: Path, source: str) -> Mapping[str, torch.Tensor]:
    """The state dict in the weights ``data`` (plain values and tensors only); ``ValueError``
    naming the package and the entry if it is none."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, KeyError,
            AttributeError, IndexError, OverflowError, UnicodeDecodeError) as err:  # fmt: skip
        raise checkpoint_load_error(f"{path}: {source}", err) from err
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"{path}: {source}: not a state dict of tensors")
    return state


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
            rdf_name, rdf = _description(read, path)
        except (EOFError, yaml.YAMLError, zipfile.BadZipFile, zlib.error) as err:
            raise ValueError(f"{path}: damaged bioimage.io package ({_one_line(err)})") from err
    meta = _part(rdf, "config", path, rdf_name).get(METADATA_KEY)
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
            text = read(name, DESCRIPTION_MAX_BYTES)
        except KeyError:
            continue
        try:
            rdf = yaml.load(text, Loader=_LOADER)  # a safe loader (libyaml when built)
        except (yaml.YAMLError, RecursionError) as err:
            raise ValueError(f"{path}: {name} is not readable YAML ({_one_line(err)})") from err
        if not isinstance(rdf, Mapping):
            raise ValueError(f"{path}: {name} is not a YAML mapping")
        _check_values(rdf, path, name)
        return name, rdf
    raise ValueError(f"{path}: no rdf.yaml inside: not a bioimage.io model package")


def _check_values(rdf: Any, path: Path, name: str) -> None:
    """``ValueError`` naming the package and ``name`` if the parsed description holds more than
    :data:`DESCRIPTION_MAX_VALUES` values, aliases counted at every use (stops early)."""
    pending, seen = [rdf], 0
    while pending:
        node = pending.pop()
        seen += 1
        if seen > DESCRIPTION_MAX_VALUES:
            raise ValueError(
                f"{path}: {name} holds more than {DESCRIPTION_MAX_VALUES:,} values (aliases "
                "counted where used): not a model description"
            )
        if isinstance(node, Mapping):
            pending.extend(node.keys())
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
