"""Prediction previews chosen from a streamed label map (unet_seg.viz.previews)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from unet_seg.viz.figures import PANEL_PX
from unet_seg.viz.previews import PreviewCollector


def label_stack(depth: int = 20, size: int = 40) -> np.ndarray:
    """Labels whose foreground grows to a maximum at slice 13."""
    labels = np.zeros((depth, size, size), np.uint8)
    for z in range(depth):
        radius = max(0, 12 - abs(z - 13) * 2)
        labels[z, 20 - radius : 20 + radius, 20 - radius : 20 + radius] = 1
    return labels


def stream(collector: PreviewCollector, labels: np.ndarray, slab: int) -> None:
    for z0 in range(0, len(labels), slab):
        collector.add(z0, labels[z0 : z0 + slab])


@pytest.mark.parametrize("slab", [1, 3, 7, 20])
def test_choice_does_not_depend_on_the_slab_size(slab):
    labels = label_stack()
    collector = PreviewCollector(labels.shape, num_slices=4)
    stream(collector, labels, slab)
    # The fullest slice (13) and three of the evenly spread slices [2, 7, 12, 17].
    assert collector.chosen() == [2, 7, 12, 13]
    # Only the slices it may show are kept: the spread and the fullest so far.
    assert set(collector._kept) <= {2, 7, 12, 13, 17}
    np.testing.assert_array_equal(collector._kept[13], labels[13])


def test_preview_png_has_a_panel_per_slice_and_row(tmp_path):
    labels = label_stack()
    image = np.random.default_rng(0).normal(size=labels.shape).astype(np.float32)
    reads = []

    def read_image(z: int) -> np.ndarray:
        reads.append(z)
        return image[z]

    collector = PreviewCollector(labels.shape, num_slices=3)
    stream(collector, labels, 4)
    path = collector.write(tmp_path / "s_preview.png", read_image, title="s.tif")
    assert sorted(reads) == collector.chosen()  # the image is read for the shown slices only
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (3 * PANEL_PX, 2 * PANEL_PX)  # image, labels
        assert png.mode == "P"  # 256 colours: a third of the bytes of RGB for noisy images
    path = collector.write(tmp_path / "i_preview.png", read_image, lambda z: labels[z] * 7)
    with Image.open(path) as png:
        assert png.size == (3 * PANEL_PX, 3 * PANEL_PX)  # a third row: instances


def test_a_2d_image_is_one_column_and_large_slices_are_strided(tmp_path):
    labels = np.zeros((1, 1500, 900), np.uint8)
    labels[0, 100:200, 100:300] = 2
    collector = PreviewCollector(labels.shape, num_slices=4)
    collector.add(0, labels)
    assert collector.chosen() == [0] and collector._kept[0].shape == (500, 300)  # stride 3
    path = collector.write(tmp_path / "p.png", lambda z: labels[z].astype(float))
    with Image.open(path) as png:
        assert png.size == (PANEL_PX, 2 * PANEL_PX)


def test_empty_prediction_shows_the_spread_and_bad_use_is_refused():
    collector = PreviewCollector((9, 8, 8), num_slices=3)
    collector.add(0, np.zeros((9, 8, 8), np.uint8))
    assert collector.chosen() == [1, 4, 7]
    with pytest.raises(ValueError, match="Z, Y, X"):
        PreviewCollector((8, 8), 3)
    partial = PreviewCollector((9, 8, 8), num_slices=3)
    partial.add(0, np.ones((2, 8, 8), np.uint8))  # rows 2.. never streamed
    with pytest.raises(ValueError, match="never streamed"):
        partial.figure(lambda z: np.zeros((8, 8)))
