"""Instance matching, AP, precision/recall/F1 and PQ against a brute-force reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from unet_seg.evaluation.instances import (
    AP_THRESHOLDS,
    MatchCounts,
    instance_scores,
    match_all,
    overlaps,
    pool,
    scores,
)


def random_boxes(rng: np.random.Generator, shape: tuple[int, ...], count: int) -> np.ndarray:
    """Label image with ``count`` random boxes painted in turn (later ones cover earlier ones)."""
    labels = np.zeros(shape, np.int32)
    for k in range(1, count + 1):
        lo = [int(rng.integers(0, n - 2)) for n in shape]
        sizes = [int(rng.integers(2, max(3, n // 2))) for n in shape]
        box = tuple(slice(a, a + s) for a, s in zip(lo, sizes, strict=True))
        labels[box] = k
    return labels


def perturbed(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    """A prediction of ``gt``: shifted, with a split object, merges, a spurious box, new ids."""
    pred = np.roll(gt, tuple(int(rng.integers(-1, 2)) for _ in gt.shape), axis=range(gt.ndim))
    ids = np.unique(pred[pred > 0])
    if len(ids) >= 2 and rng.random() < 0.5:
        pred[pred == ids[1]] = ids[0]  # merge two objects
    if len(ids) and rng.random() < 0.5:
        obj = pred == ids[-1]
        half = np.zeros_like(obj)
        cut = (slice(None),) * (gt.ndim - 1) + (slice(0, gt.shape[-1] // 2),)
        half[cut] = True
        pred[obj & half] = 99  # split one object along x
    extra = random_boxes(rng, gt.shape, 1)
    pred[(extra > 0) & (rng.random() < 0.5)] = 77
    # Fresh, non-consecutive ids: the figures must not depend on the numbering.
    old = np.unique(pred[pred > 0])
    new = rng.permutation(len(old)) * 3 + 5
    out = np.zeros_like(pred)
    for o, n in zip(old, new, strict=True):
        out[pred == o] = n
    return out


def brute_force(pred: np.ndarray, gt: np.ndarray, threshold: float) -> tuple[int, int, int, float]:
    """(TP, FP, FN, matched IoU sum) over all one-to-one matchings: most pairs, then most IoU."""
    true_ids = [i for i in np.unique(gt) if i]
    pred_ids = [i for i in np.unique(pred) if i]
    iou = np.zeros((len(true_ids), len(pred_ids)))
    for a, t in enumerate(true_ids):
        for b, p in enumerate(pred_ids):
            inter = np.sum((gt == t) & (pred == p))
            iou[a, b] = inter / np.sum((gt == t) | (pred == p))
    best = (0, 0.0)
    for k in range(1, min(iou.shape) + 1):
        for rows in itertools.combinations(range(len(true_ids)), k):
            for cols in itertools.permutations(range(len(pred_ids)), k):
                values = iou[list(rows), list(cols)]
                if np.all(values >= threshold):
                    best = max(best, (k, float(values.sum())))
    tp, iou_sum = best
    return tp, len(pred_ids) - tp, len(true_ids) - tp, iou_sum


@pytest.mark.parametrize("shape", [(12, 14), (6, 7, 8)])
def test_matching_equals_brute_force_on_random_labels(rng, shape) -> None:
    for _ in range(12):
        gt = random_boxes(rng, shape, int(rng.integers(0, 5)))
        pred = perturbed(rng, gt)
        counts = match_all(pred, gt, (0.1, 0.3, *AP_THRESHOLDS))
        for t, c in counts.items():
            tp, fp, fn, iou_sum = brute_force(pred, gt, t)
            assert (c.tp, c.fp, c.fn) == (tp, fp, fn), t
            assert c.iou_sum == pytest.approx(iou_sum)


def test_scores_by_hand() -> None:
    # gt: A (4 px), B (4 px), C (2 px). pred: A exactly, B shifted by a column (IoU 2/6),
    # a spurious object; C missed.
    gt = np.array([[1, 1, 0, 2, 2, 0], [1, 1, 0, 2, 2, 0], [0, 0, 0, 0, 0, 0], [3, 3, 0, 0, 0, 0]])
    pred = np.array([[5, 5, 0, 0, 6, 6], [5, 5, 0, 0, 6, 6], [0, 0, 0, 0, 0, 7], [0] * 6])
    row = instance_scores(pred, gt)
    # At 0.5: TP 1 (A), FP 2, FN 2.
    assert row["ap50"] == pytest.approx(1 / 5) and row["ap75"] == pytest.approx(1 / 5)
    assert row["ap"] == pytest.approx(1 / 5)  # A's IoU is 1: matched at every threshold
    assert row["precision50"] == pytest.approx(1 / 3) and row["recall50"] == pytest.approx(1 / 3)
    assert row["f1_50"] == pytest.approx(1 / 3)
    assert row["sq"] == 1.0 and row["pq"] == pytest.approx(1 / 3)
    counts = match_all(pred, gt, (0.3,))
    assert counts[0.3] == MatchCounts(2, 1, 1, 1 + 2 / 6)  # B matches at IoU 1/3


def test_ties_at_one_half_match_one_to_one() -> None:
    gt = np.array([[1, 1, 2, 2]])
    pred = np.array([[1, 1, 1, 1]])  # IoU 0.5 with both halves
    table = overlaps(pred, gt)
    np.testing.assert_allclose(table.iou, [0.5, 0.5])
    assert match_all(pred, gt)[0.5] == MatchCounts(1, 0, 1, 0.5)


def test_empty_images() -> None:
    empty = np.zeros((4, 4), np.uint16)
    assert set(instance_scores(empty, empty).values()) == {1.0}
    one = empty.copy()
    one[1:3, 1:3] = 4
    for pred, gt in ((empty, one), (one, empty)):
        row = instance_scores(pred, gt)
        assert row["ap"] == row["precision50"] == row["recall50"] == row["pq"] == 0.0


def test_pooled_counts_are_sums_not_means() -> None:
    gt = np.array([[1, 0, 2, 0, 3]])
    perfect = match_all(gt, gt)
    missed = match_all(np.zeros_like(gt), np.array([[1, 0, 0, 0, 0]]))
    pooled = pool([perfect, missed])
    assert pooled[0.5] == MatchCounts(3, 0, 1, 3.0)
    assert scores(pooled)["ap50"] == pytest.approx(3 / 4)  # the mean per image would be 1/2


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="differs"):
        overlaps(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="integer"):
        overlaps(np.zeros((2, 2)), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="negative"):
        overlaps(np.full((2, 2), -1), np.zeros((2, 2), int))


def test_compact_ids_keep_the_background_and_the_order() -> None:
    from unet_seg.evaluation.instances import compact_ids

    ids = np.array([[0, 2**40, 2**40], [7, 0, 2**62]], np.int64)
    np.testing.assert_array_equal(compact_ids(ids), [[0, 2, 2], [1, 0, 3]])
    np.testing.assert_array_equal(compact_ids(np.array([5, 9, 5])), [1, 2, 1])  # no background
