"""Reading and writing training checkpoints, and loading a trained network without Lightning
from one, or from a file that ``unet-seg-export`` wrote (TorchScript ``.pt``, ONNX ``.onnx``:
:mod:`unet_seg.models.exported`).

A checkpoint of :class:`~unet_seg.training.module.SegmentationModule` holds only plain values:
``hyper_parameters["model"]`` (the ``UNet`` keyword arguments), ``hyper_parameters
["normalization"]`` (the intensity percentiles of training) and the network's weights under
``state_dict["model.*"]``. So it loads with ``torch.load(..., weights_only=True)``, which never
runs code from the file, and needs nothing but this module to rebuild the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from unet_seg.errors import checkpoint_load_error
from unet_seg.io.atomic import replace_atomic
from unet_seg.models.bioimageio_package import (
    is_bioimageio_package,
    load_package,
    package_metadata,
)
from unet_seg.models.exported import TARGET_KEY, TUNED_KEY, is_exported, load_exported
from unet_seg.models.protocol import SegmentationNetwork
from unet_seg.models.unet import unet_with_weights

_PREFIX = "model."


def write_checkpoint(checkpoint: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` (plain values and tensors only, so it loads with
    ``weights_only=True``) to ``path`` atomically: a temporary name, renamed when complete.
    The one checkpoint writer besides Lightning's own."""
    return replace_atomic(lambda tmp: torch.save(dict(checkpoint), tmp), path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's contents, loaded with ``weights_only=True`` onto the CPU.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a checkpoint torch can load safely (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling raises many types; all mean the file is unusable
        raise checkpoint_load_error(path, err) from err
    if not isinstance(content, Mapping):
        raise ValueError(f"{path}: not a training checkpoint (no dictionary inside)")
    return dict(content)


def load_model(path: str | os.PathLike) -> tuple[SegmentationNetwork, dict[str, float]]:
    """The network in eval mode and its normalisation percentiles: the ``UNet`` of a training
    checkpoint or of a bioimage.io package from ``unet-seg-export`` (``.bioimageio.zip``), or
    for ``.onnx`` / ``.pt`` files an adapter over ONNX Runtime / TorchScript.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable file, or it lacks the network's configuration or weights.
    """
    return load_model_and_tuning(path)[:2]


def load_model_and_tuning(
    path: str | os.PathLike,
) -> tuple[SegmentationNetwork, dict[str, float], dict[str, Any] | None]:
    """:func:`load_model` plus the instance post-processing ``unet-seg-tune`` stored with the
    network (None where it was never tuned), from one read of the file.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable file, or it lacks the network's configuration or weights.
    """
    if is_exported(path):
        model, normalization = load_exported(path)
        return model, normalization, getattr(model, "tuning", None)
    if is_bioimageio_package(path):
        return load_package(path)
    content = read_checkpoint(path)
    return (*network_from_checkpoint(content, path), content.get(TUNED_KEY))


def training_target(path: str | os.PathLike) -> str | None:
    """What the network at ``path`` learnt, its training's ``data.target`` (``"classes"`` or
    ``"boundary"``): from a training checkpoint's data settings, or the metadata of an export
    (``.pt``, ``.onnx``, bioimage.io package) that recorded it; None where neither tells.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an unreadable file.
    """
    if is_exported(path):
        meta = load_exported(path)[0].metadata
    elif is_bioimageio_package(path):
        meta = package_metadata(path)
    else:
        return checkpoint_target(read_checkpoint(path))
    target = meta.get(TARGET_KEY) if isinstance(meta, Mapping) else None
    return None if target is None else str(target)


def checkpoint_target(content: Mapping[str, Any]) -> str | None:
    """:func:`training_target` of training checkpoint ``content`` already read: its data
    settings' ``target``, or None where it stores none."""
    data = content.get("datamodule_hyper_parameters") or {}
    target = data.get(TARGET_KEY) if isinstance(data, Mapping) else None
    return None if target is None else str(target)


def network_from_checkpoint(
    content: Mapping[str, Any], path: str | os.PathLike
) -> tuple[SegmentationNetwork, dict[str, float]]:
    """:func:`load_model` for checkpoint ``content`` already read from ``path`` (for the
    messages), so a caller that needs more of it reads the file once."""
    hparams = content.get("hyper_parameters") or {}
    state = content.get("state_dict") or {}
    if not isinstance(hparams.get("model"), Mapping):
        raise ValueError(f"{path}: no network configuration (hyper_parameters.model) inside")
    weights = {k[len(_PREFIX) :]: v for k, v in state.items() if k.startswith(_PREFIX)}
    model = unet_with_weights(hparams["model"], weights, str(path), "stored")
    return model, dict(hparams.get("normalization") or {})
