"""Overlay colours, slice choice and the grid figure's size (unet_seg.viz.overlays, .figures)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from unet_seg.viz.figures import PANEL_PX, figure_png, image_grid, save_png
from unet_seg.viz.overlays import (
    ALPHA,
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    TRUE_POSITIVE,
    boundaries,
    class_rgba,
    composite,
    error_rgba,
    instance_rgba,
    representative_slices,
    spread,
    subsample_step,
    to_gray,
)

TRUTH = np.array([[0, 1, 1], [0, 2, 0]])
PRED = np.array([[1, 1, 0], [0, 1, 0]])


def test_error_colours_mark_each_voxel():
    rgba = error_rgba(PRED, TRUTH)
    np.testing.assert_allclose(rgba[0, 0, :3], FALSE_POSITIVE)  # predicted, truth background
    np.testing.assert_allclose(rgba[0, 1, :3], TRUE_POSITIVE)
    np.testing.assert_allclose(rgba[0, 2, :3], FALSE_NEGATIVE)  # missed
    np.testing.assert_allclose(rgba[1, 1, :3], FALSE_POSITIVE)  # wrong foreground class
    alpha = rgba[..., 3]
    np.testing.assert_array_equal(alpha, [[ALPHA, ALPHA, ALPHA], [0, ALPHA, 0]])
    with pytest.raises(ValueError, match="differs"):
        error_rgba(PRED, TRUTH[:1])


def test_class_and_instance_overlays_leave_background_clear():
    rgba = class_rgba(TRUTH)
    assert (rgba[TRUTH == 0, 3] == 0).all() and (rgba[TRUTH != 0, 3] == ALPHA).all()
    assert not np.allclose(rgba[0, 1, :3], rgba[1, 1, :3])  # classes 1 and 2 differ
    ids = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
    edge = boundaries(ids)
    np.testing.assert_array_equal(edge, [[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    inst = instance_rgba(ids)
    assert (inst[edge, 3] == 1.0).all() and (inst[ids == 0, 3] == 0).all()
    assert not np.allclose(inst[0, 0, :3], inst[0, 3, :3])


def test_composite_and_gray():
    gray = to_gray(np.array([[0.0, 5.0, 10.0, 20.0]]), 0.0, 10.0)
    np.testing.assert_allclose(gray, [[0, 0.5, 1, 1]])
    rgba = np.zeros((1, 4, 4), np.float32)
    rgba[0, 1] = (1, 0, 0, 0.5)
    out = composite(gray, rgba)
    np.testing.assert_allclose(out[0, 1], [0.75, 0.25, 0.25])
    np.testing.assert_allclose(out[0, 2], [1, 1, 1])  # alpha 0: the grey value


def test_slice_choice():
    assert spread(10, 3) == [1, 5, 8] and spread(2, 5) == [0, 1]
    foreground = [0, 5, 9, 1, 0, 0, 0, 0, 0, 0]
    errors = [0, 0, 0, 0, 0, 0, 0, 7, 0, 0]
    # Worst slice 7, fullest slice 2, then the spread [1, 3, 5, 7, 9] fills up.
    assert representative_slices(foreground, errors, 3) == [1, 2, 7]
    assert representative_slices(foreground, None, 1) == [2]
    assert representative_slices([0, 0], [0, 0], 3) == [0, 1]  # nothing anywhere: the spread
    assert representative_slices([3], None, 3) == [0]
    assert subsample_step((7, 1000, 300), 128) == 8 and subsample_step((64, 64), 128) == 1


def test_grid_size_counts_the_panels(tmp_path):
    picture = np.zeros((10, 20, 3))
    rows = [[("a", picture)] * 3, [("b", picture[..., 0])] * 2]
    data = figure_png(image_grid(rows))
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (3 * PANEL_PX, 2 * PANEL_PX)
    path = save_png(image_grid(rows, panel_px=100), tmp_path / "grid.png")
    assert Image.open(path).size == (300, 200)
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary left
