"""The report's thumbnails of a big file: the same pictures, counted and read in blocks, so that
the report allocates a few MB whatever the file's size."""

from __future__ import annotations

import tracemalloc

import numpy as np

from unet_seg.viz import thumbnails
from unet_seg.viz.thumbnails import file_thumbnails, plane_counts


def pair(rng, shape):
    truth = (rng.random(shape) < 0.3).astype(np.uint8)
    pred = truth.copy()
    pred[..., : shape[-2] // 3, :] = 0  # errors in the upper part of each plane
    return pred, truth


def test_counts_in_blocks_equal_whole_plane_counts(rng):
    pred, truth = pair(rng, (3, 37, 29))
    pred[1] = truth[1]
    foreground, errors = plane_counts(pred, truth, chunk=50)  # a row (29) at a time
    assert foreground.tolist() == np.count_nonzero(truth, axis=(1, 2)).tolist()
    assert errors.tolist() == np.count_nonzero(pred != truth, axis=(1, 2)).tolist()
    assert errors[1] == 0


def test_pictures_do_not_depend_on_the_block_size(rng, monkeypatch):
    pred, truth = pair(rng, (4, 301, 259))
    image = rng.normal(100, 20, (2, 4, 301, 259)).astype(np.float32)  # channels first
    whole = file_thumbnails(pred, truth, image, num_slices=2, max_side=100)
    monkeypatch.setattr(thumbnails, "COUNT_CHUNK_VOXELS", 1000)  # 3 rows: a stride of 3
    assert file_thumbnails(pred, truth, image, num_slices=2, max_side=100) == whole


def test_a_big_file_costs_its_thumbnails_not_its_size(rng):
    pred, truth = pair(rng, (3000, 3000))
    image = rng.integers(0, 4000, (3000, 3000), dtype=np.uint16)
    tracemalloc.start()
    try:
        thumbs = file_thumbnails(pred, truth, image, num_slices=3, max_side=128)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(thumbs) == 1 and (thumbs[0].height, thumbs[0].width) == (125, 125)  # stride 24
    # comparing whole planes took 9 MB, the float image 36 MB; blocks of 2**20 voxels take ~2
    assert peak < truth.size // 3
