"""The kinds of instance mistakes: exact counts on drawn cases, the swap symmetry on random ones."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from unet_seg.evaluation.error_kinds import ErrorKinds, error_kinds
from unet_seg.evaluation.instances import instance_scores


def one_of_each() -> tuple[np.ndarray, np.ndarray]:
    """Truth and prediction ``(20, 60)`` with one merge, one split, one miss, one extra object
    and one exact match."""
    gt = np.zeros((20, 60), np.int32)
    pred = np.zeros_like(gt)
    gt[2:8, 2:8], gt[2:8, 8:14] = 1, 2  # two touching objects ...
    pred[2:9, 2:14] = 1  # ... joined (and a row more, so neither reaches IoU 0.5)
    gt[2:8, 20:32] = 3  # one object ...
    pred[2:8, 20:24], pred[2:8, 24:28], pred[2:8, 28:32] = 2, 3, 4  # ... cut in three
    gt[12:18, 2:8] = 4  # nothing predicted here
    pred[12:18, 20:26] = 5  # nothing true here
    gt[12:18, 40:50] = pred[12:18, 40:50] = 6  # found
    return gt, pred


def test_one_of_each_kind_is_counted_once():
    gt, pred = one_of_each()
    assert error_kinds(pred, gt) == ErrorKinds(merges=1, splits=1, missed=1, extra=1)
    # Only the exact match is a true positive: AP@0.5 = 1 / (1 TP + 5 FP + 4 FN).
    assert instance_scores(pred, gt)["ap50"] == pytest.approx(1 / 10)


def test_a_perfect_prediction_has_no_mistakes_and_ids_do_not_matter():
    gt, _ = one_of_each()
    relabelled = np.where(gt > 0, 100 - gt, 0)
    assert error_kinds(relabelled, gt) == ErrorKinds(0, 0, 0, 0)


def test_a_merge_that_still_matches_its_larger_object_is_a_merge_not_a_miss():
    gt = np.zeros((10, 30), np.int32)
    gt[1:9, 1:15], gt[1:9, 15:17] = 1, 2  # a large object and a sliver beside it
    pred = (gt > 0).astype(np.int32)
    # The large object is found (IoU 112/128); the sliver is lost inside the same prediction.
    assert instance_scores(pred, gt)["ap50"] == pytest.approx(1 / 2)
    assert error_kinds(pred, gt) == ErrorKinds(merges=1, splits=0, missed=0, extra=0)


def random_objects(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Blobs cut into pieces by random lines: touching objects of varied sizes."""
    blobs = ndi.gaussian_filter(rng.random(shape), 2.0) > 0.5
    cuts = np.zeros(shape, bool)
    for axis in range(len(shape)):
        index = [slice(None)] * len(shape)
        index[axis] = rng.choice(shape[axis], 2, replace=False)
        cuts[tuple(index)] = True
    return ndi.label(blobs & ~cuts)[0]


@pytest.mark.parametrize("shape", [(48, 48), (12, 24, 24)])
def test_swapping_prediction_and_truth_swaps_the_kinds(shape):
    rng = np.random.default_rng(7)
    for _ in range(5):
        a, b = random_objects(rng, shape), random_objects(rng, shape)
        forward, backward = error_kinds(a, b), error_kinds(b, a)
        assert forward.merges == backward.splits and forward.splits == backward.merges
        assert forward.missed == backward.extra and forward.extra == backward.missed


def test_kinds_add_up_over_images():
    gt, pred = one_of_each()
    total = error_kinds(pred, gt) + error_kinds(gt, gt)
    assert total.row() == {"merges": 1, "splits": 1, "missed": 1, "extra": 1}


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        error_kinds(np.zeros((4, 4), int), np.zeros((4, 5), int))


@pytest.mark.parametrize(
    ("width", "kinds"), [(14, ErrorKinds(0, 0, 0, 0)), (13, ErrorKinds(0, 0, 1, 1))]
)
def test_an_outline_off_by_more_than_iou_half_is_one_miss_and_one_extra(width, kinds):
    gt = np.zeros((10, 30), np.int32)
    gt[2:8, 2:22] = 1  # 20 wide
    pred = np.zeros_like(gt)
    pred[2:8, 2 + 20 - width : 2 + 20 - width + 20] = 1  # shifted: IoU width / (40 - width)
    assert error_kinds(pred, gt) == kinds
