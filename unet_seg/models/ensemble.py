"""Several trained networks as one: the mean of their softmax probabilities.

``unet-seg-predict checkpoint=[a.ckpt,b.ckpt]`` (or a model folder holding ``fold_*/model.ckpt``
or ``*.ckpt``) runs :class:`EnsembleNetwork`, which returns the log of the members' mean
softmax. It is a network like any other (the ``SegmentationNetwork`` protocol), so tiling,
streaming, block-wise and Dask prediction and the exporters take it unchanged, and the softmax
every consumer applies gives back exactly the mean probability (up to rounding).

Members must agree on what the stages around them rely on: classes, ``spatial_dims``, input
channels, the accepted input sizes and output margin (valid-padding offsets), and the
normalisation percentiles the input is prepared with; otherwise loading refuses with one line
naming both checkpoints.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unet_seg.errors import InputNotFoundError, UsageError
from unet_seg.models import shapes
from unet_seg.models.bioimageio_package import is_bioimageio_package
from unet_seg.models.checkpoint import load_model_and_tuning
from unet_seg.models.protocol import SegmentationNetwork

# Size arithmetic copied from the first member, so exporters and tiling read it as from a UNet.
_SHARED = ("features", "padding", "pooled_axes", "depth")
CheckpointSpec = str | tuple[str, ...]  # one checkpoint, or an ensemble's (hashable, picklable)


def _natural(path: Path) -> tuple:
    """Sort key putting ``fold_2`` before ``fold_10``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path)))


def resolve_checkpoints(checkpoint: str | os.PathLike | Iterable[Any]) -> list[Path]:
    """The checkpoint files ``checkpoint`` names: a file, a list of files, or a model folder
    holding ``fold_*/model.ckpt`` (the folds of a cross-validation) or else ``*.ckpt`` (sorted
    naturally); a folder that is an unzipped bioimage.io package stays one model.

    Raises:
        InputNotFoundError: an empty list, or a folder that holds no checkpoint.
    """
    items = [checkpoint] if isinstance(checkpoint, str | os.PathLike) else list(checkpoint)
    if not items:
        raise InputNotFoundError("checkpoint=[]: no checkpoint given")
    paths: list[Path] = []
    for item in items:
        path = Path(str(item))
        if not path.is_dir() or is_bioimageio_package(path):
            paths.append(path)
            continue
        found = sorted(path.glob("fold_*/model.ckpt"), key=_natural)
        found = found or sorted(path.glob("*.ckpt"), key=_natural)
        if not found:
            raise InputNotFoundError(
                f"{path}: a model folder needs fold_*/model.ckpt or *.ckpt inside, found neither"
            )
        paths.extend(found)
    return paths


def checkpoint_spec(checkpoint: str | os.PathLike | Iterable[Any]) -> CheckpointSpec:
    """What workers load (:class:`~unet_seg.blockwise.task.RunnerSpec`): the one checkpoint's
    path as today, or the ensemble's paths as a tuple."""
    paths = [str(p) for p in resolve_checkpoints(checkpoint)]
    if isinstance(checkpoint, str | os.PathLike) and not Path(checkpoint).is_dir():
        return str(checkpoint)  # as given, as before ensembles
    return paths[0] if len(paths) == 1 else tuple(paths)


def geometry(model: SegmentationNetwork) -> tuple:
    """What fixes a network's accepted sizes and output margin: ``(minimum, step, margin)`` per
    axis from its size arithmetic, or (a network without it) its output sizes for a few inputs."""
    depth, padding = getattr(model, "depth", None), getattr(model, "padding", None)
    pooled = getattr(model, "pooled_axes", None)
    if depth is not None and padding is not None and pooled is not None:
        return tuple(shapes.size_rule(int(depth), str(padding), bool(p)) for p in pooled)
    probes = []
    for size in range(16, 600, 4):
        try:
            probes.append(model.output_shape((size,) * int(model.spatial_dims)))
        except ValueError:
            probes.append(None)
    return tuple(probes)


def check_members(models: Sequence[SegmentationNetwork], names: Sequence[str],
                  normalizations: Sequence[Mapping[str, float]] | None = None) -> None:  # fmt: skip
    """``UsageError`` (one line naming both checkpoints) where a member differs from the first
    in classes, ``spatial_dims``, input channels, size arithmetic or normalisation."""
    norms = list(normalizations or [{}] * len(models))
    for model, name, norm in zip(models[1:], names[1:], norms[1:], strict=True):
        for what, value in (
            ("num_classes", lambda m: int(m.num_classes)),
            ("spatial_dims", lambda m: int(m.spatial_dims)),
            ("in_channels", lambda m: int(m.in_channels)),
            ("input sizes and output margin", geometry),
        ):
            first, this = value(models[0]), value(model)
            if first != this:
                shown = "" if what.startswith("input") else f" ({first} vs {this})"
                raise UsageError(
                    f"{names[0]} and {name} cannot be ensembled: their {what} differ{shown}"
                )
        if dict(norm) != dict(norms[0]):
            raise UsageError(f"{names[0]} and {name} cannot be ensembled: their normalisation "
                             f"differs ({dict(norms[0])} vs {dict(norm)})")  # fmt: skip


class EnsembleNetwork(nn.Module):
    """``(N, C, *spatial)`` -> ``(N, K, *output_shape(spatial))``: the log of the mean of the
    members' softmax over the K classes, i.e. logits whose softmax is the ensemble's mean
    probability. Members run one after the other (memory: one member's activations).

    Args:
        members: networks of the ``SegmentationNetwork`` protocol that agree (see
            :func:`check_members`; checked here without names or normalisation).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        check_members(members, [f"member {i}" for i in range(len(members))])
        self.members = nn.ModuleList(members)
        first = members[0]
        self.spatial_dims = int(first.spatial_dims)
        self.in_channels = int(first.in_channels)
        self.num_classes = int(first.num_classes)
        for name in _SHARED:
            if hasattr(first, name):
                setattr(self, name, getattr(first, name))

    def output_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """The members' output size for an input of ``spatial`` (they agree)."""
        return self.members[0].output_shape(spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # log softmax then logsumexp: the log of the mean without exp underflow at sure voxels
        log_probs = torch.stack([m(x).float().log_softmax(dim=1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


def load_ensemble(
    checkpoint: str | os.PathLike | Iterable[Any],
) -> tuple[SegmentationNetwork, dict[str, float], dict[str, Any] | None]:
    """``(network, normalisation, tuning)`` of ``checkpoint`` (see :func:`resolve_checkpoints`):
    one checkpoint exactly as :func:`~unet_seg.models.checkpoint.load_model_and_tuning` loads
    it, several as an :class:`EnsembleNetwork`. An ensemble keeps the members' tuned instance
    post-processing only when they all stored the same (else None: the defaults apply).

    Raises:
        FileNotFoundError, ValueError: as ``load_model_and_tuning``, naming the file.
        UsageError: members that cannot be ensembled (naming two of them).
    """
    paths = resolve_checkpoints(checkpoint)
    loaded = [load_model_and_tuning(path) for path in paths]
    if len(loaded) == 1:
        return loaded[0]
    models = [model for model, _, _ in loaded]
    check_members(models, [str(p) for p in paths], [norm for _, norm, _ in loaded])
    tunings = [tuning for _, _, tuning in loaded]
    tuning = tunings[0] if all(t == tunings[0] for t in tunings) else None
    return EnsembleNetwork(models).eval(), loaded[0][1], tuning
