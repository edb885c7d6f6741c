"""Region statistics: touching objects, components of class maps, intensities."""

from __future__ import annotations

import numpy as np

from tests.planning.conftest import object_grid
from unet_seg.planning.statistics import CLASSES, OBJECTS, Accumulator, touching_ids


def test_touching_ids_are_the_objects_that_share_a_face():
    ids = np.array([[1, 1, 2, 0, 3], [0, 0, 0, 0, 3], [4, 0, 5, 5, 0]])
    assert touching_ids(ids) == {1, 2}  # 5 next to 5 is one object; diagonals do not touch


def test_objects_and_classes_of_an_object_id_map():
    label = object_grid((40, 60), (6, 8), gap=0)
    acc = Accumulator(1, OBJECTS)
    acc.add(np.where(label > 0, 10, 0)[None], label)
    objects = acc.summary()["objects"]
    count = int(label.max())
    assert objects["count"] == count and objects["touching_fraction"] == 1.0
    assert objects["median_extent"] == [6.0, 8.0] and objects["median_voxels"] == 48.0
    fraction = acc.summary()["labels"]["class_fraction"]
    assert fraction["1"] == count * 48 / label.size


def test_a_class_map_counts_components_and_cannot_see_touching():
    label = (object_grid((40, 60), (6, 8), gap=3) > 0).astype(np.uint8)
    acc = Accumulator(1, CLASSES)
    acc.add(label[None].astype(np.float32), label)
    summary = acc.summary()
    assert summary["objects"]["count"] == int(object_grid((40, 60), (6, 8), gap=3).max())
    assert summary["objects"]["touching_fraction"] is None
    assert summary["labels"]["values"] == [0, 1]


def test_intensity_statistics_per_channel_are_exact_for_small_regions():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 5, (2, 30, 30))
    image[1] *= -1
    acc = Accumulator(2, CLASSES)
    acc.add(image, np.zeros((30, 30), np.uint8))
    channels = acc.summary()["intensity"]
    for c in range(2):
        assert np.isclose(channels[c]["mean"], image[c].mean())
        assert np.isclose(channels[c]["std"], image[c].std())
        assert channels[c]["percentiles"]["50"] == np.percentile(image[c], 50)
        assert channels[c]["foreground_percentiles"] is None  # no foreground voxel
