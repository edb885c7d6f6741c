"""Seeded watershed on hand-made probability maps (2D and 3D)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from unet_seg.data.boundary import boundary_target
from unet_seg.evaluation.instances import instance_scores
from unet_seg.instances.seeded import foreground_and_interior, seeded_watershed
from unet_seg.instances.watershed import instance_labels


def probabilities(objects: np.ndarray) -> np.ndarray:
    """``(3, *spatial)`` probabilities a perfect boundary-aware net would give: interior falls
    off towards each object's edge, boundary takes the rest of the object."""
    depth = np.zeros(objects.shape)
    for index in np.unique(objects[objects > 0]):
        inside = objects == index
        depth[inside] = ndi.distance_transform_edt(inside)[inside]
    interior = np.clip((depth - 1) / 2, 0, 1)
    background = (objects == 0).astype(float)
    return np.stack([background, interior, 1 - background - interior])


def touching_squares() -> np.ndarray:
    objects = np.zeros((12, 20), np.int32)
    objects[2:10, 2:10] = 1
    objects[2:10, 10:18] = 2
    return objects


def test_touching_squares_come_apart() -> None:
    objects = touching_squares()
    labels = seeded_watershed(*foreground_and_interior(probabilities(objects)))
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, objects)
    # The class map merges them: one connected component.
    assert instance_labels(objects > 0, split=False).max() == 1


def test_trained_target_round_trip_3d() -> None:
    objects = np.zeros((10, 12, 22), np.int32)
    objects[1:9, 2:10, 2:11] = 4
    objects[1:9, 2:10, 11:20] = 9
    target = boundary_target(objects)
    probs = np.stack([target == c for c in range(3)]).astype(np.float32)  # one-hot as probs
    labels = seeded_watershed(*foreground_and_interior(probs))
    assert instance_scores(labels, objects)["ap"] == 1.0


def test_unseeded_objects_kept_and_small_ones_dropped() -> None:
    objects = touching_squares()
    probs = probabilities(objects)
    faint = np.array([0.0, 0.2, 0.8])  # object, but no interior: no seed
    probs[:, 0, 0], probs[:, 11, 15:19] = faint, faint[:, None]
    fg, interior = foreground_and_interior(probs)
    labels = seeded_watershed(fg, interior)
    assert labels.max() == 4 and labels[0, 0] == 3 and (labels[11, 15:19] == 4).all()
    assert seeded_watershed(fg, interior, min_size=2).max() == 3  # the one-voxel speck goes
    # A higher seed threshold than any interior gives no seed: one merged object per component.
    merged = seeded_watershed(fg, interior * 0.9, seed_threshold=0.95)
    assert merged.max() == 3 and (merged[objects > 0] == merged[2, 2]).all()
    # A foreground threshold above every probability: nothing.
    assert seeded_watershed(fg * 0.5, interior).max() == 0


def test_two_classes_and_bad_input() -> None:
    probs = probabilities(touching_squares())
    two = np.stack([probs[0], 1 - probs[0]])  # an object map: seeds are its confident cores
    fg, interior = foreground_and_interior(two)
    np.testing.assert_array_equal(fg, interior)
    with pytest.raises(ValueError, match="interior class 3"):
        foreground_and_interior(probs, interior_class=3)
    with pytest.raises(ValueError, match="differs"):
        seeded_watershed(fg, interior[:3])
    with pytest.raises(ValueError, match="seed threshold"):
        seeded_watershed(fg, interior, seed_threshold=1.0)
