"""Validation metrics against hand counts and skimage on small arrays."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from skimage.measure import label
from skimage.metrics import adapted_rand_error, variation_of_information

from unet_seg.evaluation.metrics import rand_error
from unet_seg.training.metrics import SegmentationMetrics, segmentation_scores


def test_overlap_scores_hand_counted() -> None:
    target = np.array([[[1, 1, 0, 0], [1, 0, 0, -1]]])
    pred = np.array([[[1, 0, 1, 0], [1, 0, 0, 1]]])
    metrics = SegmentationMetrics(num_classes=2)
    metrics.update(pred, target)
    result = metrics.compute()
    # Valid voxels: 7. Foreground TP=2, FP=1, FN=1; wrong = 2.
    assert result["dice"] == pytest.approx(4 / 6)
    assert result["iou"] == pytest.approx(2 / 4)
    assert result["pixel_error"] == pytest.approx(2 / 7)


def test_perfect_prediction() -> None:
    target = np.zeros((2, 12, 12), dtype=np.int64)
    target[:, 2:5, 2:6] = 1
    target[:, 7:11, 6:10] = 1
    metrics = SegmentationMetrics(num_classes=2)
    metrics.update(target.copy(), target)
    result = metrics.compute()
    assert result == pytest.approx(
        {"dice": 1.0, "iou": 1.0, "pixel_error": 0.0, "rand_error": 0.0, "vi": 0.0, "ap": 1.0,
         "ap50": 1.0, "pq": 1.0}, abs=1e-12,
    )  # fmt: skip


def test_object_figures_pool_the_windows() -> None:
    target = np.zeros((2, 8, 8), dtype=np.int64)
    target[:, 1:4, 1:4] = 1
    target[:, 5:7, 5:7] = 1
    pred = target.copy()
    pred[0, 5:7, 5:7] = 0  # the first window misses one of its two objects
    metrics = SegmentationMetrics(num_classes=2)
    metrics.update(pred, target)
    result = metrics.compute()
    # Pooled: TP 3, FP 0, FN 1 at every IoU; F1 6/7 with matched IoU 1.
    assert result["ap50"] == result["ap"] == pytest.approx(3 / 4)
    assert result["pq"] == pytest.approx(6 / 7)


def test_segmentation_scores_match_skimage(rng: np.random.Generator) -> None:
    target = (rng.random((20, 24)) > 0.45).astype(np.int64)
    pred = (rng.random((20, 24)) > 0.5).astype(np.int64)
    are, vi = segmentation_scores(pred, target)
    true_seg, pred_seg = label(target == 1, connectivity=1), label(pred == 1, connectivity=1)
    singletons = pred_seg.copy()
    singletons[pred_seg == 0] = pred_seg.max() + 1 + np.arange((pred_seg == 0).sum())
    expected_are = adapted_rand_error(true_seg, singletons, ignore_labels=(0,))[0]
    expected_vi = variation_of_information(true_seg, pred_seg, ignore_labels=(0,)).sum()
    assert are == pytest.approx(expected_are)
    assert vi == pytest.approx(expected_vi)
    assert 0 < are < 1 and vi > 0


def test_merging_two_cells_is_a_rand_error() -> None:
    # Two cells split by a one-pixel membrane; a prediction that misses the membrane merges them.
    target = np.ones((6, 9), dtype=np.int64)
    target[:, 4] = 0
    merged = np.ones_like(target)
    are, vi = segmentation_scores(merged, target)
    # Pairs within the true cells: 2 * 24*23; predicted segment holds both: precision = 1104/2256.
    precision = (2 * 24 * 23) / (48 * 47)
    assert are == pytest.approx(1 - 2 * precision / (precision + 1))
    assert vi == pytest.approx(1.0)  # one bit: which of two equal cells a merged pixel came from


def test_missed_voxels_split_rather_than_merge() -> None:
    # Two cells; the prediction misses one column of each. Predicted background voxels are
    # singletons, so the two cells are not merged through them: only lost pairs count.
    target = np.ones((4, 9), dtype=np.int64)
    target[:, 4] = 0
    pred = target.copy()
    pred[:, 0] = 0
    pred[:, 8] = 0
    are, _ = segmentation_scores(pred, target)
    # Per cell: 16 true voxels, of which 12 share one predicted segment and 4 are singletons.
    true_pairs = 2 * 16 * 15
    shared = 2 * 12 * 11
    recall = shared / true_pairs  # predicted pairs are all inside one true cell: precision 1
    assert are == pytest.approx(1 - 2 * recall / (recall + 1))


def test_3d_and_multiclass() -> None:
    target = np.zeros((1, 4, 6, 6), dtype=np.int64)
    target[0, 1:3, 1:3, 1:3] = 1
    target[0, 1:3, 3:5, 3:5] = 2
    pred = target.copy()
    pred[0, 1:3, 3:5, 3:5] = 1  # class 2 predicted as class 1
    metrics = SegmentationMetrics(num_classes=3)
    metrics.update(pred, target)
    result = metrics.compute()
    # class 1: TP 8, FP 8 -> 16/24; class 2: TP 0, FN 8 -> 0
    assert result["dice"] == pytest.approx((16 / 24 + 0) / 2)
    assert result["pixel_error"] == pytest.approx(8 / 144)


def test_finding_no_object_is_the_worst_rand_error_without_a_warning() -> None:
    gt = np.zeros((10, 10), np.int64)
    gt[2:5, 2:5], gt[6:9, 6:9] = 1, 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skimage's 0 / 0 recall warned on every such image
        assert rand_error(np.zeros_like(gt), gt) == 1.0


def test_empty_target_has_no_rand_score() -> None:
    metrics = SegmentationMetrics(num_classes=2)
    metrics.update(np.zeros((1, 5, 5), dtype=np.int64), np.zeros((1, 5, 5), dtype=np.int64))
    result = metrics.compute()
    assert math.isnan(result["dice"]) and math.isnan(result["rand_error"])
    assert result["pixel_error"] == 0.0


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="region_class"):
        SegmentationMetrics(num_classes=2, region_class=2)
    with pytest.raises(ValueError, match="differ in shape"):
        SegmentationMetrics(num_classes=2).update(np.zeros((1, 3, 3)), np.zeros((1, 3, 4)))
