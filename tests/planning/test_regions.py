"""Which regions the fingerprint reads: whole small cases, a bounded, seeded sample of big ones."""

from __future__ import annotations

import math

import pytest

from unet_seg.planning.regions import MAX_BOX_VOXELS, box_shape, plan_regions


def test_a_small_case_is_read_whole():
    sampling = plan_regions((30, 40, 50), chunks=(8, 8, 8), whole_voxels=60_000)
    assert sampling.whole and sampling.boxes == ((slice(0, 30), slice(0, 40), slice(0, 50)),)
    assert sampling.voxels_read == sampling.voxels_total == 60_000


@pytest.mark.parametrize("chunks", [(16, 64, 64), (1, 1000, 1000), None])
def test_a_large_case_is_sampled_in_bounded_chunk_aligned_boxes(chunks):
    shape = (4000, 20_000, 20_000)  # 1.6e12 voxels: a terabyte store
    sampling = plan_regions(shape, chunks, seed=3, case_index=1, boxes=16)
    box = box_shape(shape, chunks)
    assert not sampling.whole and sampling.voxels_total == math.prod(shape)
    assert len(sampling.boxes) == 16
    assert sampling.voxels_read == 16 * math.prod(box) and math.prod(box) <= MAX_BOX_VOXELS
    for region in sampling.boxes:
        assert [s.stop - s.start for s in region] == list(box)
        assert all(0 <= s.start and s.stop <= n for s, n in zip(region, shape, strict=True))
        assert all(s.start % b == 0 for s, b in zip(region, box, strict=True))


def test_thin_chunks_are_grown_and_huge_ones_read_in_part():
    assert box_shape((100, 2000, 2000), (8, 64, 64)) == (64, 64, 64)  # 8 chunks deep
    assert box_shape((10, 30, 30), (16, 64, 64)) == (10, 30, 30)  # never beyond the case
    # 64 one-slice chunks of 1000 x 1000 would be 64 Mi voxels: at most 4 Mi
    assert box_shape((100, 2000, 2000), (1, 1000, 1000)) == (4, 1000, 1000)
    assert box_shape((2000, 2000, 2000), (512, 512, 512)) == (128, 128, 256)


def test_the_same_seed_gives_the_same_boxes_and_another_seed_others():
    shape = (500, 4000, 4000)
    first = plan_regions(shape, (32, 256, 256), seed=0)
    assert plan_regions(shape, (32, 256, 256), seed=0) == first
    assert plan_regions(shape, (32, 256, 256), seed=1).boxes != first.boxes
    assert plan_regions(shape, (32, 256, 256), seed=0, case_index=1).boxes != first.boxes
