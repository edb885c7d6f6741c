"""Boundary-aware targets on small hand-made examples (2D and 3D)."""

from __future__ import annotations

import numpy as np
import pytest

from unet_seg.data.boundary import boundary_target, derive_target


def test_two_touching_squares() -> None:
    objects = np.zeros((6, 8), np.int32)
    objects[1:5, 1:4] = 1
    objects[1:5, 4:7] = 2  # shares its left side with square 1: no background between them
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 2, 2, 2, 2, 2, 2, 0],
            [0, 2, 1, 2, 2, 1, 2, 0],
            [0, 2, 1, 2, 2, 1, 2, 0],
            [0, 2, 2, 2, 2, 2, 2, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(boundary_target(objects), expected)


def test_image_edge_is_not_a_boundary() -> None:
    objects = np.zeros((5, 5), np.int32)
    objects[:3, :3] = 7
    target = boundary_target(objects)
    np.testing.assert_array_equal(target[:3, :3], [[1, 1, 2], [1, 1, 2], [2, 2, 2]])
    assert (target[3:] == 0).all() and (target[:, 3:] == 0).all()
    whole = np.ones((4, 4), np.int32)  # one object filling the image: all interior
    assert (boundary_target(whole) == 1).all()


def test_width_two() -> None:
    objects = np.zeros((9, 9), np.int32)
    objects[1:8, 1:8] = 1
    target = boundary_target(objects, width=2)
    assert (target[3:6, 3:6] == 1).all() and np.count_nonzero(target == 1) == 9
    assert np.count_nonzero(target == 2) == 49 - 9
    # sqrt(2) <= 2: the diagonal step does not make a voxel at depth 3 a boundary voxel
    assert target[3, 3] == 1


def test_anisotropic_3d_stacked_boxes() -> None:
    objects = np.zeros((8, 9, 9), np.int32)
    objects[1:4, 1:8, 1:8] = 1
    objects[4:7, 1:8, 1:8] = 2  # on top of box 1: they touch along z
    target = boundary_target(objects, width=2, spacing=(2.0, 0.5, 0.5))  # z is 2 in-plane voxels
    # In plane two voxels of boundary; along z only the face voxel (the next is 2 * 2 > 2 away).
    for z in (2, 5):  # the middle slice of each box
        np.testing.assert_array_equal(target[z, 3:6, 3:6], np.ones((3, 3)))
        assert np.count_nonzero(target[z] == 2) == 49 - 9
    for z in (1, 3, 4, 6):  # faces: against background (1, 6) or against the other box (3, 4)
        assert (target[z][objects[z] > 0] == 2).all()
    coarse = boundary_target(objects, width=1, spacing=(4.0, 1.0, 1.0))
    np.testing.assert_array_equal(coarse[2, 2:7, 2:7], np.ones((5, 5)))  # rim of one voxel
    assert (coarse[3][objects[3] > 0] == 2).all()  # touching faces still separate the boxes


def test_small_and_thin_objects_keep_their_core() -> None:
    objects = np.zeros((7, 12), np.int32)
    objects[1:6, 1:8] = 1  # big enough for an interior at width 2
    objects[1:4, 8:11] = 2  # 3 x 3, touching object 1: all within 2 of its edge
    objects[5, 9:12] = 3  # a one-voxel line
    target = boundary_target(objects, width=2)
    np.testing.assert_array_equal(target[3, 3:6], [1, 1, 1])  # object 1 as without the others
    assert np.count_nonzero((objects == 1) & (target == 1)) == 3
    # The deepest voxel of the 3 x 3 square (its centre, 2 from the outside) is its seed.
    np.testing.assert_array_equal(target[1:4, 8:11], [[2, 2, 2], [2, 1, 2], [2, 2, 2]])
    np.testing.assert_array_equal(target[5, 9:12], [1, 1, 1])  # every voxel equally deep
    for index in (1, 2, 3):
        assert (target[objects == index] == 1).any()


def test_derive_from_components_keeps_ignore() -> None:
    labels = np.zeros((5, 9), np.int64)
    labels[1:4, 1:4] = 1
    labels[1:4, 5:8] = 1  # a background seam between the two: two components
    labels[0, 0] = -1
    target = derive_target(labels, "boundary")
    assert target[0, 0] == -1
    assert target[2, 2] == 1 and target[2, 6] == 1  # the centre of each square
    assert np.count_nonzero(target == 2) == 16
    assert derive_target(labels, "classes") is labels
    # Membrane images mark the cells as class 0 and the membrane (here the seam) as class 1.
    cells = derive_target(1 - np.clip(labels, 0, 1), "boundary", object_class=0)
    np.testing.assert_array_equal(cells, np.where(target == -1, 0, target))


def test_instances_take_precedence() -> None:
    labels = np.zeros((4, 6), np.int64)
    labels[:, :] = 1  # the class map merges two touching objects
    instances = np.zeros((4, 6), np.int64)
    instances[:, :3], instances[:, 3:] = 1, 2
    target = derive_target(labels, "boundary", instances=instances)
    np.testing.assert_array_equal(target[1], [1, 1, 2, 2, 1, 1])
    with pytest.raises(ValueError, match="shape"):
        derive_target(labels, "boundary", instances=instances[:2])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="target"):
        derive_target(np.zeros((3, 3), np.int64), "edges")
    with pytest.raises(ValueError, match="width"):
        boundary_target(np.zeros((3, 3), np.int64), width=0)
    with pytest.raises(ValueError, match="spacing"):
        boundary_target(np.zeros((3, 3), np.int64), spacing=(1.0,))
    with pytest.raises(ValueError, match="integers"):
        boundary_target(np.zeros((3, 3)))
