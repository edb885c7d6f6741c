"""The contingency table gives skimage's Rand error and VI and the object overlaps exactly, slab by
slab, for ids of any size (what evaluate allocates: tests/evaluation/test_slabwise.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import metrics as skm

from unet_seg.evaluation.contingency import (
    adapted_rand_error,
    contingency,
    variation_of_information,
)
from unet_seg.evaluation.instances import overlaps


def skimage_rand(pred: np.ndarray, gt: np.ndarray) -> float:
    """The ISBI scoring through skimage: predicted background voxels are singletons."""
    if not gt.any():
        return math.nan
    pred = pred.astype(np.int64)
    alone = (pred == 0) & (gt != 0)
    pred[alone] = pred.max() + 1 + np.arange(int(alone.sum()))
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(skm.adapted_rand_error(gt, pred, ignore_labels=(0,))[0])


def skimage_vi(pred: np.ndarray, gt: np.ndarray) -> float:
    if not gt.any():
        return math.nan
    return float(sum(skm.variation_of_information(gt, pred, ignore_labels=(0,))))


def blobs(rng, shape, level=0.5) -> np.ndarray:
    return ndi.label(ndi.gaussian_filter(rng.random(shape), 1.5) > level)[0]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("slab", [5, 1 << 22])
def test_rand_error_and_vi_equal_skimage(seed, slab):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(3, 40, size=1 + seed % 3))
    gt, pred = blobs(rng, shape), blobs(rng, shape, 0.45)
    if seed == 4:
        pred[:] = 0  # nothing found: every object split into singletons
    table = contingency(pred, gt, slab)
    assert adapted_rand_error(table) == pytest.approx(skimage_rand(pred, gt), abs=1e-12,
                                                      nan_ok=True)  # fmt: skip
    assert variation_of_information(table) == pytest.approx(skimage_vi(pred, gt), abs=1e-9,
                                                            nan_ok=True)  # fmt: skip


def test_overlaps_count_every_pair_once_across_slabs():
    rng = np.random.default_rng(7)
    gt, pred = blobs(rng, (37, 41)), blobs(rng, (37, 41), 0.45)
    table = overlaps(pred, gt)
    whole = contingency(pred, gt, 1 << 22)
    for slab in (1, 13):
        cut = contingency(pred, gt, slab)
        for field in ("true_id", "pred_id", "count"):
            np.testing.assert_array_equal(getattr(cut, field), getattr(whole, field))
    for k, (t, p) in enumerate(zip(table.true_index, table.pred_index, strict=True)):
        shared = np.count_nonzero((gt == t + 1) & (pred == p + 1))  # ids are 1..n here
        assert shared == table.intersection[k] > 0
    np.testing.assert_array_equal(table.true_area, np.bincount(gt.ravel())[1:])


def test_sparse_huge_ids_score_as_their_compact_numbering():
    rng = np.random.default_rng(3)
    gt, pred = blobs(rng, (30, 30)), blobs(rng, (30, 30), 0.45)
    huge = np.where(pred > 0, pred.astype(np.uint64) * (1 << 40) + (1 << 62), 0)
    for figure in (adapted_rand_error, variation_of_information):
        assert figure(contingency(huge, gt)) == figure(contingency(pred, gt))
    assert overlaps(huge, gt).intersection.tolist() == overlaps(pred, gt).intersection.tolist()


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int32, np.uint64])
def test_small_ids_counted_by_bincount_give_the_rows_of_the_sorts(dtype):
    rng = np.random.default_rng(1)
    gt, pred = blobs(rng, (31, 33)), blobs(rng, (31, 33), 0.45)
    gt, pred = (gt > 0, pred > 0) if dtype is bool else (gt.astype(dtype), pred.astype(dtype))
    fast = contingency(pred, gt)
    shift = 1 << 40  # the same segments with ids too large for a table: sorted instead
    slow = contingency(np.where(pred > 0, pred.astype(np.int64) + shift, 0),
                       np.where(gt > 0, gt.astype(np.int64) + shift, 0))  # fmt: skip
    np.testing.assert_array_equal(fast.count, slow.count)
    np.testing.assert_array_equal(np.where(slow.true_id > 0, slow.true_id - shift, 0), fast.true_id)
    np.testing.assert_array_equal(np.where(slow.pred_id > 0, slow.pred_id - shift, 0), fast.pred_id)
    assert fast.true_id.dtype == np.dtype(dtype)
