"""Components labelled slab by slab and joined across faces equal ``ndi.label`` of the whole
mask, ids included: U-shapes and spirals that leave and re-enter a slab, 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from unet_seg.evaluation.components import SlabComponents


def slabwise(mask: np.ndarray, planes: int) -> np.ndarray:
    """``mask`` labelled ``planes`` planes at a time, then relabelled through the lut."""
    components = SlabComponents()
    parts = []
    for z in range(0, len(mask), planes):
        ids, offset = components.add(mask[z : z + planes])
        parts.append(np.where(ids > 0, ids.astype(np.int64) + offset, 0))
    lut = components.lut()
    return lut[np.concatenate(parts)] if parts else np.zeros(mask.shape, np.int64)


def spiral(size: int) -> np.ndarray:
    """A square spiral one voxel wide with one-voxel gaps: one object that crosses every row
    band several times."""
    mask = np.zeros((size, size), bool)
    y, x, dy, dx, length = size // 2, size // 2, 0, 1, 1
    while True:
        for _ in range(2):
            for _ in range(length):
                if not (0 <= y < size and 0 <= x < size):
                    return mask
                mask[y, x] = True
                y, x = y + dy, x + dx
            dy, dx = dx, -dy
        length += 2


def u_shapes() -> np.ndarray:
    """Two nested U-shapes opening upwards and a bar: each arm is its own component within a
    slab near the top, joined only by the bottom plane."""
    mask = np.zeros((12, 15), bool)
    mask[1:11, 1] = mask[1:11, 13] = mask[10, 1:14] = True  # outer U
    mask[1:8, 4] = mask[1:8, 10] = mask[7, 4:11] = True  # inner U
    mask[0, 6:9] = True  # a bar above, alone
    return mask


@pytest.mark.parametrize("planes", [1, 2, 3, 5, 100])
@pytest.mark.parametrize("case", ["spiral", "u", "blobs2d", "blobs3d", "empty", "full"])
def test_slabwise_labels_equal_whole_labels(case, planes):
    rng = np.random.default_rng(planes)
    mask = {
        "spiral": lambda: spiral(23),
        "u": u_shapes,
        "blobs2d": lambda: ndi.gaussian_filter(rng.random((37, 29)), 1.5) > 0.5,
        "blobs3d": lambda: ndi.gaussian_filter(rng.random((13, 17, 11)), 1.2) > 0.5,
        "empty": lambda: np.zeros((6, 7), bool),
        "full": lambda: np.ones((4, 5, 3), bool),
    }[case]()
    expected, count = ndi.label(mask)
    if case == "spiral":
        assert count == 1
    np.testing.assert_array_equal(slabwise(mask, planes), expected)


def test_lut_of_nothing_and_pair_count():
    components = SlabComponents()
    assert components.lut().tolist() == [0]
    components.add(u_shapes()[:9])
    components.add(u_shapes()[9:])
    assert components.pair_count() == 2  # the outer U's two arms cross into the bottom slab
