"""What a candidate network costs, in closed form: parameters, MACs and activation memory of one
forward pass for one sample, and the memory and time of a training step.

The counting is :func:`unet_seg.models.summary.summarize`'s (every leaf layer's output except
in-place ReLUs, MACs as ``torch.utils.flop_counter`` counts them), done on the size arithmetic of
:mod:`unet_seg.models.shapes` instead of a traced network, so that the planner can price hundreds
of candidates in milliseconds without torch; ``tests/planning/test_cost.py`` checks that both
give the same numbers. Valid padding only (what the planner plans).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from unet_seg.models.shapes import output_shape

BYTES = 4  # float32
# Training keeps every forward output for the backward pass, and the backward pass holds a
# gradient of the same size plus the concatenated skips: about three times the forward outputs.
TRAIN_ACTIVATION_FACTOR = 3
# Weights, their gradients and Adam's two moments.
TRAIN_PARAMETER_COPIES = 4
# A training step is the forward pass and a backward pass of about twice its MACs.
TRAIN_MACS_FACTOR = 3


@dataclass(frozen=True)
class NetworkCost:
    """One sample ``(1, C, *patch)`` through the network: ``params``, ``macs``, ``activation_bytes``
    (summed forward outputs, float32)."""

    params: int
    macs: int
    activation_bytes: int

    def training_bytes(self, batch: int) -> int:
        """Estimated memory of a training step at ``batch`` samples."""
        activations = TRAIN_ACTIVATION_FACTOR * batch * self.activation_bytes
        return activations + TRAIN_PARAMETER_COPIES * BYTES * self.params

    def inference_bytes(self) -> int:
        """Estimated memory of one forward pass without gradients (one tile)."""
        return self.activation_bytes + BYTES * self.params

    def step_macs(self, batch: int) -> int:
        """MACs of one training step at ``batch`` samples."""
        return TRAIN_MACS_FACTOR * batch * self.macs


def network_cost(
    patch: Sequence[int],
    features: Sequence[int],
    in_channels: int = 1,
    num_classes: int = 2,
    norm: str | None = "batch",
    pooled_axes: Sequence[bool] | None = None,
) -> NetworkCost:
    """The :class:`NetworkCost` of a valid-padding ``UNet(features, norm, ...)`` on a spatial
    ``patch``; ``ValueError`` (from :func:`~unet_seg.models.shapes.output_shape`) where the
    network does not accept the patch."""
    dims = len(patch)
    pooled = tuple(pooled_axes) if pooled_axes is not None else (True,) * dims
    output_shape(patch, len(features), "valid", pooled)  # refuses sizes the network refuses
    scale = [2 if p else 1 for p in pooled]
    kernel = 3**dims
    up_kernel = math.prod(scale)
    norm_params = 0 if norm is None else 2
    params = macs = elements = 0

    def block(size: list[int], c_in: int, c_out: int) -> list[int]:
        nonlocal params, macs, elements
        for conv_in in (c_in, c_out):
            size = [s - 2 for s in size]
            voxels = math.prod(size)
            params += c_out * conv_in * kernel + (c_out if norm is None else norm_params * c_out)
            macs += voxels * c_out * conv_in * kernel
            elements += voxels * c_out * (1 if norm is None else 2)  # conv (+ norm) output
        return size

    size = list(patch)
    skips = []
    c_in = in_channels
    for level, c_out in enumerate(features):
        if level:
            size = [s // f for s, f in zip(size, scale, strict=True)]
            elements += math.prod(size) * c_in  # max-pool output
        size = block(size, c_in, c_out)
        skips.append((list(size), c_out))
        c_in = c_out
    skips.pop()
    elements += math.prod(size) * c_in  # the dropout (or identity) at the bottom
    for _, c_skip in reversed(skips):
        voxels_in = math.prod(size)
        size = [s * f for s, f in zip(size, scale, strict=True)]
        params += c_in * c_skip * up_kernel + c_skip
        macs += voxels_in * c_in * c_skip * up_kernel
        elements += math.prod(size) * c_skip  # up-convolution output
        size = block(size, c_in, c_skip)
        c_in = c_skip
    voxels = math.prod(size)
    params += c_in * num_classes + num_classes
    macs += voxels * c_in * num_classes
    elements += voxels * num_classes
    return NetworkCost(params=params, macs=macs, activation_bytes=BYTES * elements)
