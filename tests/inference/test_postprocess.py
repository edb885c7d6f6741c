"""Label maps, stored probabilities (inference.postprocess) and instance splitting (instances)."""

from __future__ import annotations

import numpy as np
import pytest

from unet_seg.inference import postprocess
from unet_seg.inference.postprocess import probabilities_to_labels, store_probabilities
from unet_seg.instances.watershed import instance_labels


def disks(shape, centres, radius):
    grid = np.indices(shape)
    mask = np.zeros(shape, bool)
    for centre in centres:
        dist2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        mask |= dist2 <= radius**2
    return mask


@pytest.mark.parametrize("shape", [(3, 7, 5, 6), (2, 9, 4), (300, 1, 3), (2, 0, 4), (4, 5)])
def test_labels_in_row_chunks_equal_one_argmax(monkeypatch, shape):
    monkeypatch.setattr(postprocess, "ARGMAX_CHUNK_VOXELS", 7)  # many chunks, one partial
    probs = np.random.default_rng(1).integers(0, 3, shape).astype(np.float32)  # many ties
    labels = probabilities_to_labels(probs)
    np.testing.assert_array_equal(labels, probs.argmax(axis=0))
    assert labels.dtype == (np.uint8 if shape[0] <= 256 else np.uint16)


def test_labels_and_stored_probabilities():
    probs = np.array([[[0.2, 0.6]], [[0.8, 0.4]]], np.float32)  # (K=2, 1, 2)
    np.testing.assert_array_equal(probabilities_to_labels(probs), [[1, 0]])
    assert probabilities_to_labels(probs).dtype == np.uint8
    np.testing.assert_array_equal(store_probabilities(probs, "uint8")[1], [[204, 102]])
    assert store_probabilities(probs, "float16").dtype == np.float16
    with pytest.raises(ValueError, match="probability dtype"):
        store_probabilities(probs, "int8")


def test_touching_disks_are_split_by_watershed():
    mask = disks((40, 60), [(20, 18), (20, 40)], 12)  # overlapping: one connected component
    assert instance_labels(mask, split=False).max() == 1
    labels = instance_labels(mask, split=True, min_distance=5)
    assert labels.max() == 2
    assert labels[20, 18] != labels[20, 40] and labels[20, 18] > 0
    assert np.array_equal(labels > 0, mask)


def test_separate_components_and_min_size_in_3d():
    mask = np.zeros((6, 20, 20), bool)
    mask[1:5, 2:8, 2:8] = True  # 144 voxels
    mask[1:5, 12:18, 12:18] = True
    mask[0, 0, 19] = True  # a single stray voxel
    labels = instance_labels(mask, min_size=2)
    assert labels.dtype == np.int32 and labels.max() == 2
    assert labels[0, 0, 19] == 0
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]
    assert instance_labels(np.zeros((4, 4), bool)).max() == 0
