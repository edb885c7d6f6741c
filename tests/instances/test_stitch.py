"""Instances per block, merged across faces, equal scipy.ndimage.label on the whole map."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from unet_seg.blockwise.plan import plan_blocks
from unet_seg.inference.tiling import plan_tiles
from unet_seg.instances.stitch import (
    StitchOptions,
    face_boxes,
    local_instances,
    merge_table,
    neighbour_faces,
)
from unet_seg.models import UNet


def stitched(labels: np.ndarray, block_shape, min_size: int = 0) -> np.ndarray:
    """Label ``labels`` block by block through the merge table, like the block-wise path."""
    model = UNet(3, 1, 2, features=(4, 8), padding="same", dropout=0.0)
    blocks = plan_blocks(plan_tiles(model, labels.shape, 8), block_shape)
    local = np.zeros(labels.shape, np.uint32)
    summaries = {}
    for block in blocks:
        ids, summaries[block.index] = local_instances(labels[block.write_box], StitchOptions())
        local[block.write_box] = ids
    faces = []
    for a, b, axis in neighbour_faces(blocks):
        box_a, box_b = face_boxes(blocks, a, b, axis)
        faces.append((a, b, local[box_a], local[box_b]))
    table = merge_table(blocks, summaries, faces, min_size)
    out = np.zeros(labels.shape, np.int64)
    for block in blocks:
        out[block.write_box] = table.relabel(block.index, local[block.write_box])
    assert table.count == out.max()
    return out


@pytest.mark.parametrize(
    "shape,block,density", [((9, 40, 35), (4, 16, 8), 0.55), ((1, 64, 50), (1, 7, 9), 0.6),
                            ((6, 20, 21), (3, 5, 4), 0.3)]
)  # fmt: skip
def test_connected_components_equal_scipy_label_exactly(rng, shape, block, density):
    labels = (rng.random(shape) < density).astype(np.uint8)  # percolating: objects span blocks
    expected, count = ndi.label(labels == 1)
    out = stitched(labels, block)
    assert count > 5
    np.testing.assert_array_equal(out, expected)


def test_min_size_counts_voxels_over_all_blocks(rng):
    labels = np.zeros((1, 20, 20), np.uint8)
    labels[0, 2:4, 3:13] = 1  # 20 voxels across two blocks
    labels[0, 10, 10:13] = 1  # 3 voxels
    out = stitched(labels, (1, 20, 8), min_size=5)
    assert out.max() == 1 and (out == 1).sum() == 20 and out[0, 10].max() == 0


def test_empty_blocks_give_no_objects():
    out = stitched(np.zeros((2, 10, 10), np.uint8), (1, 5, 5))
    assert out.max() == 0
