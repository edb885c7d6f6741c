"""The preview of one predicted file, drawn from its written outputs, for any format and size.

The blocks record their foreground voxels per slice (``info["foreground"]``); the slices to show
are chosen from those counts and read back from the input and the outputs, strided, one plane at
a time (:class:`unet_seg.viz.previews.SlicePreview`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.inference.inputs import Layout

log = logging.getLogger(__name__)


def foreground_counts(records: Iterable[dict], depth: int) -> np.ndarray:
    """``(Z,)`` foreground voxels per slice of the tiling's ``Z``, summed over the block records
    (``write``: the block's ``(Z, Y, X)`` region, ``foreground``: its counts per slice)."""
    counts = np.zeros(depth, np.int64)
    for info in records:
        block_counts = info.get("foreground")
        if block_counts is not None:  # blocks recorded by an older version count nothing
            z0, z1 = info["write"][0]
            counts[z0:z1] += np.asarray(block_counts, np.int64)
    return counts


def write_preview(
    target: Path,
    counts: np.ndarray,
    layout: Layout,
    image: Any,
    labels: Any,
    instances: Any = None,
    num_slices: int = 4,
    title: str = "",
) -> None:
    """Draw ``<stem>_preview.png`` of ``image`` (the model's input, ``(C?, *spatial)``; the
    channel ``layout`` picks, else channel 0, is shown), ``labels`` and ``instances``
    (``(*spatial)``, lazily indexable). A preview that cannot be drawn is logged; the file's
    outputs stand."""
    try:
        # matplotlib (~30 MB) is imported only when a preview is drawn, not with predict.
        from unet_seg.viz.previews import SlicePreview, plane_reader

        shape = replace(layout, channels=False).volume_shape(labels.shape)
        preview = SlicePreview(shape, counts, num_slices)
        axis, step = layout.slice_axis, preview.step
        lead = (layout.channel or 0,) if layout.channels else ()
        read_instances = None if instances is None else plane_reader(instances, axis, step)
        preview.write(target, plane_reader(image, axis, step, lead),
                      plane_reader(labels, axis, step), read_instances, title)  # fmt: skip
    except Exception as err:  # a picture is not worth failing the prediction for
        log.warning("%s: no preview: %s", target, err)
