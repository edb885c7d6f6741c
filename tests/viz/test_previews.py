"""Prediction previews: slices chosen from per-slice foreground counts, read back strided
(unet_seg.viz.previews)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from unet_seg.viz.figures import PANEL_PX
from unet_seg.viz.previews import SlicePreview, plane_reader


def label_stack(depth: int = 20, size: int = 40) -> np.ndarray:
    """Labels whose foreground grows to a maximum at slice 13."""
    labels = np.zeros((depth, size, size), np.uint8)
    for z in range(depth):
        radius = max(0, 12 - abs(z - 13) * 2)
        labels[z, 20 - radius : 20 + radius, 20 - radius : 20 + radius] = 1
    return labels


def counts(labels: np.ndarray) -> np.ndarray:
    return np.count_nonzero(labels.reshape(len(labels), -1), axis=1)


def test_the_fullest_slice_and_evenly_spread_ones_are_chosen():
    labels = label_stack()
    # The fullest slice (13) and three of the evenly spread slices [2, 7, 12, 17].
    assert SlicePreview(labels.shape, counts(labels), num_slices=4).chosen() == [2, 7, 12, 13]
    ties = np.zeros(20, int)
    ties[[5, 9]] = 3  # equals: the first, as a stream in z order would keep it
    assert SlicePreview(labels.shape, ties, num_slices=2).chosen() == [5, 15]


def test_preview_png_has_a_panel_per_slice_and_row(tmp_path):
    labels = label_stack()
    image = np.random.default_rng(0).normal(size=labels.shape).astype(np.float32)
    reads = []

    def read_image(z: int) -> np.ndarray:
        reads.append(z)
        return image[z]

    preview = SlicePreview(labels.shape, counts(labels), num_slices=3)
    path = preview.write(tmp_path / "s_preview.png", read_image, plane_reader(labels))
    assert sorted(reads) == preview.chosen()  # the image is read for the shown slices only
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (3 * PANEL_PX, 2 * PANEL_PX)  # image, labels
        assert png.mode == "P"  # 256 colours: a third of the bytes of RGB for noisy images
    path = preview.write(tmp_path / "i_preview.png", read_image, plane_reader(labels),
                         lambda z: labels[z] * 7)  # fmt: skip
    with Image.open(path) as png:
        assert png.size == (3 * PANEL_PX, 3 * PANEL_PX)  # a third row: instances


def test_a_2d_image_is_one_column_and_large_planes_are_read_strided(tmp_path):
    labels = np.zeros((1500, 900), np.uint8)
    labels[100:200, 100:300] = 2
    preview = SlicePreview((1, *labels.shape), [int((labels > 0).sum())], num_slices=4)
    assert preview.chosen() == [0] and preview.step == 3
    read = plane_reader(labels, step=preview.step)
    assert read(0).shape == (500, 300)  # stride 3
    np.testing.assert_array_equal(read(0), labels[::3, ::3])
    path = preview.write(tmp_path / "p.png", lambda z: read(z).astype(float), read)
    with Image.open(path) as png:
        assert png.size == (PANEL_PX, 2 * PANEL_PX)


def test_planes_across_any_axis_and_of_a_channel():
    volume = np.arange(2 * 4 * 5 * 6).reshape(2, 4, 5, 6)
    np.testing.assert_array_equal(plane_reader(volume[0], axis=1)(3), volume[0, :, 3, :])
    np.testing.assert_array_equal(
        plane_reader(volume, axis=2, step=2, lead=(1,))(4), volume[1, ::2, ::2, 4]
    )


def test_empty_prediction_shows_the_spread_and_bad_use_is_refused():
    assert SlicePreview((9, 8, 8), np.zeros(9), num_slices=3).chosen() == [1, 4, 7]
    with pytest.raises(ValueError, match="Z, Y, X"):
        SlicePreview((8, 8), [0] * 8, 3)
    with pytest.raises(ValueError, match="9 counts"):
        SlicePreview((8, 8, 8), [0] * 9, 3)
