"""The same-size form of a valid U-Net, which tiling tools can run.

A valid network crops its margin itself: ``(N, C, *s) -> (N, K, *(s - margin))``. bioimage.io
tools (bioimageio.core, deepImageJ, ilastik) tile an image only for outputs of the input's size
with a declared ``halo``: they read each tile with the halo around it (mirrored at the image
border), run the model and keep the tile's centre. So the packages hold the network behind a
mirror: the input is mirrored (numpy's ``reflect``), the valid network runs, and the output is
trimmed back to exactly the input's size, each output voxel over the input voxel it describes.

Two rules make the kept centres equal ``unet-seg-predict``'s output, which is the valid network
on the image mirrored by ``margin / 2``:

* a kept voxel never saw the tile's mirror, only real voxels (or the image border's mirror,
  which the tool pads as ``unet-seg-predict`` does): an output voxel sees ``margin / 2`` voxels
  each side and, by its place in the deepest pooling window, up to ``step - 1`` more on one
  side, so the halo is ``margin / 2 + step - 1``;
* the tiles keep the network's pooling grid: max-pooling makes a U-Net equivariant to shifts by
  whole ``step``s (``2 ** (depth - 1)``) only. Accepted tile sizes are twice the halo plus whole
  steps, so the kept centres (which tools lay end to end from the image's start) begin on whole
  steps, and the mirror before the tile is ``extra`` voxels wider than ``margin / 2`` (trimmed
  from the output again), which puts the tile's grid where ``unet-seg-predict`` has it. Tools
  flush the last tile with the image's far edge: that tile too is on the grid where the image
  size is a multiple of ``step``; elsewhere it sees the grid shifted and may differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unet_seg.models import shapes


@dataclass(frozen=True)
class AxisRule:
    """How the same-size form treats one spatial axis: accepted sizes ``minimum + n * step``,
    the ``halo`` a tool crops per side, the mirror ``(before, after)`` inside the model and the
    voxels ``(trim_before, trim_after)`` it then trims from the valid network's output."""

    minimum: int
    step: int
    halo: int
    before: int
    after: int
    trim_before: int
    trim_after: int


def axis_rule(depth: int, padding: str, pooled: bool) -> AxisRule:
    """The :class:`AxisRule` of an axis of a ``depth``-level network (see the module's rules;
    a ``same`` network has no margin: no halo, no mirror)."""
    valid_minimum, step, margin = shapes.size_rule(depth, padding, pooled)
    if margin == 0:
        return AxisRule(valid_minimum, step, 0, 0, 0, 0, 0)
    half = margin // 2
    # An output voxel sees half the margin each side, plus up to step - 1 voxels more on one
    # side, by where it lies in its deepest pooling window.
    halo = half + step - 1
    extra_before = -halo % step  # the tile's first network voxel on predict's grid
    minimum = 2 * halo + step  # kept centres of whole steps, at least one
    # Then the mirrored tile (tile + margin + both extras) must be a size the network takes.
    extra_after = (valid_minimum - minimum - margin - extra_before) % step
    return AxisRule(minimum, step, halo, half + extra_before, half + extra_after,
                    extra_before, extra_after)  # fmt: skip


def axis_rules(model) -> tuple[AxisRule, ...]:
    """One :class:`AxisRule` per spatial axis of ``model`` (a ``UNet``)."""
    return tuple(axis_rule(model.depth, model.padding, pooled) for pooled in model.pooled_axes)


def mirror(model) -> dict[str, list[list[int]]]:
    """The ``mirror`` and ``trim`` keyword arguments of ``unet_architecture.UNet`` that make it
    the same-size form of ``model``: ``[[before, after], ...]`` per spatial axis."""
    rules = axis_rules(model)
    return {"mirror": [[r.before, r.after] for r in rules],
            "trim": [[r.trim_before, r.trim_after] for r in rules]}  # fmt: skip


class SameSizeNetwork(nn.Module):
    """``network`` (a ``UNet``) behind its mirror: ``(N, C, *s) -> (N, K, *s)`` logits for
    ``s`` of :func:`axis_rules`. Exposes the network's arithmetic attributes (so the exporters
    and ``network_metadata`` describe the network it wraps) and ``example_size``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        for name in ("spatial_dims", "in_channels", "num_classes", "features", "depth",
                     "padding", "pooled_axes"):  # fmt: skip
            setattr(self, name, getattr(network, name))
        self.rules = axis_rules(network)
        # F.pad lists the last axis first, each axis as (before, after).
        self._pad = [p for rule in reversed(self.rules) for p in (rule.before, rule.after)]
        self._trim = (..., *(slice(r.trim_before, -r.trim_after or None) for r in self.rules))

    def example_size(self, steps: int = 1) -> tuple[int, ...]:
        """An accepted spatial size: the smallest plus ``steps`` steps on every axis."""
        return tuple(rule.minimum + steps * rule.step for rule in self.rules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self._pad):
            x = F.pad(x, self._pad, mode="reflect")
        return self.network(x)[self._trim]
