"""Patch geometry: sizes, mirror padding at borders, grid windows, foreground centres."""

from __future__ import annotations

import numpy as np
import pytest

from unet_seg.data.patches import (
    CoordinateSampler,
    centered_start,
    check_patch_size,
    extract_patch,
    foreground_coordinates,
    grid_starts,
    random_center,
)


def test_check_patch_size():
    assert check_patch_size(188, 2) == (188, 188)
    assert check_patch_size([52, 68, 68], 3) == (52, 68, 68)
    with pytest.raises(ValueError, match=r"patch_size \[188\] has 1 entries but spatial_dims is 2"):
        check_patch_size([188], 2)
    with pytest.raises(ValueError, match="spatial_dims is 3"):
        check_patch_size((64, 64), 3)
    with pytest.raises(ValueError, match="positive integers"):
        check_patch_size((64, 0), 2)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        check_patch_size(64, 1)


def test_inside_patch_is_a_plain_crop(rng):
    array = rng.normal(size=(2, 10, 12))
    patch = extract_patch(array, (3, 4), (5, 6))
    np.testing.assert_array_equal(patch, array[:, 3:8, 4:10])
    patch[...] = 0  # a copy: the source is untouched
    assert array[:, 3:8, 4:10].any()


def test_border_patch_mirrors_without_repeating_the_edge():
    array = np.arange(5 * 6).reshape(5, 6)
    patch = extract_patch(array, (-2, -1), (4, 4))
    # row -2 mirrors row 2, row -1 mirrors row 1; column -1 mirrors column 1
    expected = array[[2, 1, 0, 1]][:, [1, 0, 1, 2]]
    np.testing.assert_array_equal(patch, expected)
    far = extract_patch(array, (3, 4), (4, 4))  # past the far corner: rows 5, 6 mirror 3, 2
    np.testing.assert_array_equal(far, array[[3, 4, 3, 2]][:, [4, 5, 4, 3]])
    sym = extract_patch(array, (-2, 0), (3, 2), mode="symmetric")  # repeats the edge row
    np.testing.assert_array_equal(sym, array[[1, 0, 0]][:, :2])
    const = extract_patch(array, (-1, 0), (2, 2), mode="constant", cval=-1)
    np.testing.assert_array_equal(const, [[-1, -1], [0, 1]])


def test_patch_larger_than_image_matches_numpy_reflect(rng):
    array = rng.integers(0, 100, size=(1, 4, 7, 5))
    patch = extract_patch(array, (-6, -9, 2), (16, 20, 11))
    padded = np.pad(array, ((0, 0), (6, 6), (9, 4), (0, 8)), mode="reflect")
    np.testing.assert_array_equal(patch, padded[:, :16, :20, 2:13])
    assert patch.shape == (1, 16, 20, 11)


def test_window_entirely_outside_continues_the_mirroring():
    array = np.arange(4.0)[None] * np.ones((3, 1))
    # reflect: x = 4, 5, 6, 7 -> 2, 1, 0, 1
    np.testing.assert_array_equal(extract_patch(array, (0, 6), (3, 2)), [[0.0, 1.0]] * 3)
    np.testing.assert_array_equal(extract_patch(array, (0, -5), (1, 3)), [[1.0, 2.0, 3.0]])


def test_bad_pad_mode():
    with pytest.raises(ValueError, match="padding mode"):
        extract_patch(np.zeros((4, 4)), (0, 0), (2, 2), mode="wrap")


def test_grid_starts_cover_the_image_flush_with_the_edge():
    assert grid_starts((256, 256), (188, 188)) == [(0, 0), (0, 68), (68, 0), (68, 68)]
    assert grid_starts((100,), (188,)) == [(-44,)]  # one centred window, mirror-padded
    assert grid_starts((512,), (252,), stride=(164,)) == [(0,), (164,), (260,)]
    covered = np.zeros((30, 41), bool)
    for y, x in grid_starts(covered.shape, (12, 16)):
        assert 0 <= y <= 18 and 0 <= x <= 25
        covered[y : y + 12, x : x + 16] = True
    assert covered.all()


def test_centered_start():
    assert centered_start((10, 0), (4, 5)) == (8, -2)


def test_random_center_oversamples_foreground(rng):
    label = np.zeros((50, 60), np.int64)
    label[40:43, 7:9] = 1
    coords = foreground_coordinates(label, None, limit=100, rng=rng)
    assert coords.shape == (6, 2)
    coords = CoordinateSampler(coords)
    for _ in range(20):
        assert label[random_center(label.shape, rng, coords, foreground_prob=1.0)] == 1
    centers = [random_center(label.shape, rng, coords, foreground_prob=0.0) for _ in range(200)]
    assert all(0 <= y < 50 and 0 <= x < 60 for y, x in centers)
    assert sum(label[c] for c in centers) < 20  # uniform: the 6-pixel object is rarely hit


def test_foreground_coordinates_limit_and_classes(rng):
    label = np.zeros((20, 20), np.int64)
    label[:10] = 1
    label[10:12] = 2
    assert len(foreground_coordinates(label, None, limit=50, rng=rng)) == 50
    only2 = foreground_coordinates(label, [2], limit=1000, rng=rng)
    assert len(only2) == 40 and np.all(label[tuple(only2.T)] == 2)
