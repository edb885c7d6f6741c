"""Instance figures: matching predicted objects to true ones, AP, precision/recall/F1 and PQ.

Both inputs are label images ``(*spatial)`` of any dimension, 0 = background, each positive id one
object. At an IoU threshold ``t`` a predicted and a true object may be matched when their IoU is at
least ``t``; every object is matched at most once, and the matching has the most pairs (ties: the
largest total IoU), as in StarDist's ``matching``. For ``t >= 0.5`` the pairs are unique anyway
(two objects cannot both overlap a third by more than half), so the assignment only decides
exact ties and thresholds below 0.5. From the counts of true positives (TP), false positives (FP)
and false negatives (FN):

- ``ap``: the "average precision" of the nuclei benchmarks (DSB 2018, StarDist, Cellpose),
  ``TP / (TP + FP + FN)``, per threshold and averaged over ``0.5, 0.55, ..., 0.95``;
- ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``, ``f1`` at IoU 0.5;
- panoptic quality (Kirillov et al. 2019) ``pq = sq * rq``: ``sq`` the mean IoU of the matched
  pairs, ``rq = TP / (TP + FP/2 + FN/2)`` (= F1) at IoU 0.5. Kirillov et al. match at IoU > 0.5;
  here at >= 0.5 like AP, which differs only for pairs at exactly 0.5.

Images with no object in either give 1 for every figure (nothing to find, nothing wrongly found);
otherwise a figure whose denominator is 0 is 0. Overlaps are counted sparsely (only pairs that
touch), so thousands of objects cost about a sort of the foreground voxels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from unet_seg.evaluation.contingency import Contingency, contingency

AP_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2).tolist())


@dataclass(frozen=True)
class Overlaps:
    """The overlapping (true, predicted) object pairs of two label images.

    Attributes:
        n_true, n_pred: number of objects in each image.
        true_index, pred_index: ``(P,)`` int64 object indices (0-based, in sorted id order) of
            the ``P`` pairs that share at least one voxel.
        iou: ``(P,)`` float64 intersection over union of each pair.
        intersection: ``(P,)`` int64 voxels each pair shares.
        true_area, pred_area: ``(n_true,)`` / ``(n_pred,)`` int64 voxels of each object.
    """

    n_true: int
    n_pred: int
    true_index: np.ndarray
    pred_index: np.ndarray
    iou: np.ndarray
    intersection: np.ndarray
    true_area: np.ndarray
    pred_area: np.ndarray


@dataclass(frozen=True)
class MatchCounts:
    """Counts of one matching; they add up over images (pooled figures)."""

    tp: int
    fp: int
    fn: int
    iou_sum: float  # total IoU of the matched pairs

    def __add__(self, other: MatchCounts) -> MatchCounts:
        return MatchCounts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
            self.iou_sum + other.iou_sum,
        )  # fmt: skip

    @property
    def empty(self) -> bool:
        return self.tp + self.fp + self.fn == 0

    def _ratio(self, num: float, den: float) -> float:
        if self.empty:
            return 1.0
        return num / den if den else 0.0

    @property
    def ap(self) -> float:
        return self._ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def precision(self) -> float:
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def sq(self) -> float:
        return self._ratio(self.iou_sum, self.tp)

    @property
    def pq(self) -> float:
        return self.sq * self.f1


def _check_labels(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    for name, array in (("prediction", pred), ("ground truth", gt)):
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise ValueError(f"{name} instances must be integer labels, got dtype {array.dtype}")
        if array.size and array.min() < 0:
            raise ValueError(f"{name} instances hold negative ids (min {array.min()})")


def compact_ids(ids: np.ndarray) -> np.ndarray:
    """Object ids ``(*spatial)`` numbered ``1..n`` in the order of their values, 0 kept as
    background: the figures are the same, but no step allocates by the largest id (ids near
    2**40 from another tool would otherwise ask for terabytes)."""
    ids = np.asarray(ids)
    values, inverse = np.unique(ids, return_inverse=True)
    shift = 0 if values.size and values[0] == 0 else 1
    return (inverse.reshape(ids.shape) + shift).astype(np.int64)


def overlaps(pred: np.ndarray, gt: np.ndarray) -> Overlaps:
    """The IoU of every pair of a true and a predicted object that overlap, from two
    ``(*spatial)`` label images of the same shape."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    _check_labels(pred, gt)
    return overlaps_of(contingency(pred, gt))


def overlaps_of(table: Contingency) -> Overlaps:
    """:func:`overlaps` from the two images' :class:`Contingency` table."""
    true_ids, true_rows = np.unique(table.true_id, return_inverse=True)
    pred_ids, pred_cols = np.unique(table.pred_id, return_inverse=True)
    true_area = np.bincount(true_rows.reshape(-1), weights=table.count, minlength=len(true_ids))
    pred_area = np.bincount(pred_cols.reshape(-1), weights=table.count, minlength=len(pred_ids))
    true_fg, pred_fg = true_ids > 0, pred_ids > 0  # ids are >= 0: background is the first
    true_area = np.rint(true_area[true_fg]).astype(np.int64)
    pred_area = np.rint(pred_area[pred_fg]).astype(np.int64)
    both = (table.true_id > 0) & (table.pred_id > 0)
    ti = np.searchsorted(true_ids[true_fg], table.true_id[both]).astype(np.int64)
    pi = np.searchsorted(pred_ids[pred_fg], table.pred_id[both]).astype(np.int64)
    inter = table.count[both].astype(np.int64)
    order = np.lexsort((pi, ti))
    ti, pi, inter = ti[order], pi[order], inter[order]
    union = true_area[ti] + pred_area[pi] - inter
    return Overlaps(
        len(true_area), len(pred_area), ti, pi, inter / union, inter, true_area, pred_area
    )


def _assign(true_index: np.ndarray, pred_index: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Boolean ``(P,)`` mask of the eligible pairs kept: most pairs, then largest total IoU.

    Each connected group of pairs (objects linked through shared candidates) is assigned on its
    own; a group of one pair is kept as it is, so only conflicts pay for the Hungarian algorithm.
    """
    keep = np.zeros(len(iou), bool)
    if not len(iou):
        return keep
    rows, rows_inv = np.unique(true_index, return_inverse=True)
    cols, cols_inv = np.unique(pred_index, return_inverse=True)
    if len(rows) == len(cols) == len(iou):  # no object has two candidates
        keep[:] = True
        return keep
    n = len(rows) + len(cols)
    graph = coo_matrix((np.ones(len(iou)), (rows_inv, len(rows) + cols_inv)), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    pair_group = group[rows_inv]
    for g in np.unique(pair_group):
        members = np.flatnonzero(pair_group == g)
        if len(members) == 1:
            keep[members] = True
            continue
        r, r_inv = np.unique(rows_inv[members], return_inverse=True)
        c, c_inv = np.unique(cols_inv[members], return_inverse=True)
        # A pair is worth 1 plus its IoU scaled below 1 / (pairs possible): more pairs always
        # win, and among as many pairs the larger total IoU.
        score = np.zeros((len(r), len(c)))
        score[r_inv, c_inv] = 1.0 + iou[members] / (min(len(r), len(c)) + 1)
        best_r, best_c = linear_sum_assignment(score, maximize=True)
        chosen = np.zeros((len(r), len(c)), bool)
        chosen[best_r, best_c] = True
        keep[members] = chosen[r_inv, c_inv]
    return keep


def matched_pairs(table: Overlaps, threshold: float) -> np.ndarray:
    """Boolean ``(P,)``: which of the table's pairs the matching at IoU ``threshold`` (in
    ``(0, 1]``) keeps."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1], got {threshold}")
    eligible = table.iou >= threshold
    kept = np.zeros(len(table.iou), bool)
    kept[eligible] = _assign(
        table.true_index[eligible], table.pred_index[eligible], table.iou[eligible]
    )
    return kept


def match_counts(table: Overlaps, threshold: float) -> MatchCounts:
    """TP, FP, FN and the matched IoU sum at one IoU ``threshold`` (in ``(0, 1]``)."""
    kept = matched_pairs(table, threshold)
    tp = int(kept.sum())
    iou_sum = float(table.iou[kept].sum())
    return MatchCounts(tp, table.n_pred - tp, table.n_true - tp, iou_sum)


def match_all(
    pred: np.ndarray, gt: np.ndarray, thresholds: Sequence[float] = AP_THRESHOLDS
) -> dict[float, MatchCounts]:
    """``{threshold: MatchCounts}`` of two label images ``(*spatial)``; 0.5 is always included
    (the precision, recall, F1 and PQ threshold)."""
    return matches_of(overlaps(pred, gt), thresholds)


def matches_of(
    table: Overlaps, thresholds: Sequence[float] = AP_THRESHOLDS
) -> dict[float, MatchCounts]:
    """:func:`match_all` from the overlapping pairs of a prediction and its truth."""
    wanted = sorted({float(t) for t in thresholds} | {0.5})
    return {t: match_counts(table, t) for t in wanted}


def scores(
    counts: dict[float, MatchCounts], thresholds: Sequence[float] = AP_THRESHOLDS
) -> dict[str, float]:
    """Flat figures from :func:`match_all` counts (of one image, or summed over several):
    ``ap`` (mean over ``thresholds``), ``ap50``, ``ap75``, ``precision50``, ``recall50``,
    ``f1_50``, ``sq``, ``pq``."""
    at50 = counts[0.5]
    row = {"ap": float(np.mean([counts[float(t)].ap for t in thresholds]))}
    for t in (0.5, 0.75):
        if t in counts:
            row[f"ap{round(t * 100)}"] = counts[t].ap
    row |= {"precision50": at50.precision, "recall50": at50.recall, "f1_50": at50.f1}
    row |= {"sq": at50.sq, "pq": at50.pq}
    return row


def pool(per_image: Iterable[dict[float, MatchCounts]]) -> dict[float, MatchCounts]:
    """Sum the counts of several images per threshold (every object of every image counts once:
    the pooled figures of a data set, not the mean of per-image ones)."""
    total: dict[float, MatchCounts] = {}
    for counts in per_image:
        for t, c in counts.items():
            total[t] = total[t] + c if t in total else c
    return total


def instance_scores(
    pred: np.ndarray, gt: np.ndarray, thresholds: Sequence[float] = AP_THRESHOLDS
) -> dict[str, float]:
    """:func:`scores` of one pair of label images ``(*spatial)``."""
    return scores(match_all(pred, gt, thresholds), thresholds)
