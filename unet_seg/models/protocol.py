"""The contract between a segmentation network and the inference stages.

Tiling, input checking and the model runner need only these attributes, so anything that has
them (a :class:`~unet_seg.models.UNet`, or an exported network behind an adapter) can be run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class SegmentationNetwork(Protocol):
    """A network mapping ``(N, in_channels, *spatial)`` images to
    ``(N, num_classes, *output_shape(spatial))`` logits, with ``len(spatial) == spatial_dims``."""

    spatial_dims: int
    in_channels: int
    num_classes: int

    def output_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Output size for an input of ``spatial`` size; ``ValueError`` if the size does not fit."""
        ...
