"""Per-object measurements: regionprops' values, the same from blocks as from the whole image,
and a CSV table with one row per object."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import regionprops

from unet_seg.instances.object_table import (
    Measurements,
    combine,
    measure,
    table_columns,
    write_object_table,
)


def label_image(rng, shape, fill=0.2):
    """Random blobs filling ``fill`` of the image, with gaps in their ids (ids need not be
    sequential)."""
    smooth = ndi.gaussian_filter(rng.random(shape), 1.5)
    blobs = smooth > np.quantile(smooth, 1 - fill)
    ids, _ = ndi.label(blobs)
    return np.where(ids > 0, ids * 3 + 7, 0)


@pytest.mark.parametrize("offset", [0, 1 << 40])  # narrow id range: a lookup; wide: a sort
@pytest.mark.parametrize("shape", [(40, 50), (12, 30, 26)])
def test_measurements_are_regionprops(rng, shape, offset):
    small = label_image(rng, shape)
    ids = np.where(small > 0, small.astype(np.int64) + offset, 0)  # regionprops: small ids
    image = rng.integers(0, 4000, (2, *shape)).astype(np.uint16)
    measured = measure(ids, image=image)
    props = regionprops(small)
    assert len(props) > 5
    np.testing.assert_array_equal(measured.ids, [p.label + offset for p in props])
    np.testing.assert_array_equal(measured.voxels, [p.area for p in props])
    centroids = measured.coordinate_sums / measured.voxels
    np.testing.assert_allclose(centroids.T, [p.centroid for p in props], rtol=1e-12)
    boxes = np.concatenate([measured.start, measured.stop]).T
    np.testing.assert_array_equal(boxes, [p.bbox for p in props])
    for c in range(2):
        means = [image[c][small == p.label].mean() for p in props]
        np.testing.assert_allclose(measured.intensity_sums[c] / measured.voxels, means)


@pytest.mark.parametrize("shape,cuts", [((40, 50), (7, 11)), ((12, 30, 26), (5, 8, 9))])
def test_blocks_combine_to_the_whole_image_exactly(rng, shape, cuts):
    ids = label_image(rng, shape)
    image = rng.integers(0, 60000, (1, *shape)).astype(np.uint16)
    whole = measure(ids, image=image)
    parts = []
    starts = [range(0, size, cut) for size, cut in zip(shape, cuts, strict=True)]
    for corner in itertools.product(*starts):
        box = tuple(slice(c, c + cut) for c, cut in zip(corner, cuts, strict=True))
        part = measure(ids[box], corner, image[(slice(None), *box)])
        parts.append(Measurements.from_record(part.to_record(), len(shape)))  # as recorded
    rng.shuffle(parts)  # blocks finish in any order
    blocked = combine(parts, len(shape), 1)
    spanning = sum(len(p.ids) for p in parts) - len(whole.ids)
    assert spanning > 5  # objects cut by block borders: the sums had something to join
    for name in ("ids", "voxels", "coordinate_sums", "start", "stop", "intensity_sums"):
        np.testing.assert_array_equal(getattr(blocked, name), getattr(whole, name), err_msg=name)


def test_empty_blocks_and_no_objects(rng):
    empty = measure(np.zeros((4, 5, 6), np.uint32), (8, 0, 0), np.ones((1, 4, 5, 6)))
    assert empty.ids.size == 0 and empty.coordinate_sums.shape == (3, 0)
    again = Measurements.from_record(empty.to_record(), 3)
    assert again.start.shape == (3, 0) and again.intensity_sums.shape == (1, 0)
    none = combine([], 3)
    assert none.ids.size == 0 and none.stop.shape == (3, 0)
    ids = np.zeros((6, 6), np.int32)
    ids[1:3, 2:5] = 4
    alone = measure(ids)
    joined = combine([alone, measure(np.zeros((2, 2), np.int32), (4, 4))], 2)
    np.testing.assert_array_equal(joined.voxels, alone.voxels)
    np.testing.assert_array_equal(joined.start, alone.start)


def test_bad_image_or_origin_is_a_value_error(rng):
    ids = np.ones((4, 5), np.int32)
    with pytest.raises(ValueError, match="image shape"):
        measure(ids, image=np.ones((1, 5, 4)))
    with pytest.raises(ValueError, match="origin"):
        measure(ids, (0, 0, 0))


def test_table_has_one_row_per_object_in_physical_and_voxel_units(tmp_path):
    ids = np.zeros((3, 8, 10), np.uint16)
    ids[0:2, 1:3, 2:6] = 5  # 16 voxels
    ids[2, 5:8, 0:1] = 9  # 3 voxels
    image = np.stack([np.full(ids.shape, 10.0), np.arange(ids.size).reshape(ids.shape)])
    path = write_object_table(tmp_path / "t" / "v_objects.csv", measure(ids, image=image),
                              (2.0, 0.5, 0.5))  # fmt: skip
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == table_columns(3, 2) == [
        "label", "voxels", "physical_size", "centroid_z", "centroid_y", "centroid_x",
        "bbox_z_start", "bbox_z_stop", "bbox_y_start", "bbox_y_stop", "bbox_x_start",
        "bbox_x_stop", "mean_intensity_0", "mean_intensity_1",
    ]  # fmt: skip
    first, second = ([float(v) for v in row] for row in rows[1:])
    assert len(rows) == 3
    assert first[:6] == [5, 16, 8.0, 0.5, 1.5, 3.5]
    assert first[6:12] == [0, 2, 1, 3, 2, 6]
    assert first[12] == 10.0 and first[13] == image[1][ids == 5].mean()
    assert second[:6] == [9, 3, 1.5, 2.0, 6.0, 0.0]
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary left


def test_single_channel_2d_table_header():
    assert table_columns(2, 1) == [
        "label", "voxels", "physical_size", "centroid_y", "centroid_x", "bbox_y_start",
        "bbox_y_stop", "bbox_x_start", "bbox_x_stop", "mean_intensity",
    ]  # fmt: skip
