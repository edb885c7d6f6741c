"""Thumbnails from per-slice counts read only the slices shown, strided, and are the pictures
that the whole arrays give."""

from __future__ import annotations

import numpy as np
import pytest

from unet_seg.viz.slice_thumbnails import chosen_thumbnails, strided_image
from unet_seg.viz.thumbnails import file_thumbnails


@pytest.mark.parametrize("shape", [(300, 260), (6, 300, 260)])
def test_only_the_shown_slices_are_read_and_the_pictures_are_the_whole_arrays(rng, shape):
    truth = (rng.random(shape) < 0.3).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.1, 1 - truth, truth).astype(np.uint8)
    image = rng.normal(size=(2, *shape))  # channels first: channel 0 is shown
    planes = (truth[None] if len(shape) == 2 else truth), (pred[None] if len(shape) == 2 else pred)
    foreground = np.count_nonzero(planes[0].reshape(len(planes[0]), -1), axis=1)
    errors = np.count_nonzero((planes[0] != planes[1]).reshape(len(planes[0]), -1), axis=1)
    reads = []

    def read(z, step):
        reads.append((z, step))
        index = (*(() if z is None else (z,)), slice(None, None, step), slice(None, None, step))
        return pred[index], truth[index]

    thumbs = chosen_thumbnails(shape, foreground, errors, read, image, num_slices=2, max_side=100)
    assert thumbs == file_thumbnails(pred, truth, image, num_slices=2, max_side=100)
    shown = [t.z for t in thumbs]
    assert reads == [(z, 3) for z in shown]  # one read per picture, strided to 100 pixels
    assert len(shape) == 3 or shown == [None]


def test_an_image_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match=r"image shape \(3, 8, 9\) does not fit"):
        strided_image(np.zeros((3, 8, 9)), (3, 8, 8), 0, 1)
