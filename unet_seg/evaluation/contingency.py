"""The contingency table of two segmentations, counted slab by slab: every figure that compares
segments (Rand error, variation of information, object overlaps) is computed from it.

Computing those figures from the label images directly widens them to int64 and builds several
per-voxel tables: about 70-85 bytes per voxel, so a 40000 x 40000 pair asked for over 100 GB.
The table instead holds one row per pair of ids that share a voxel, and is filled from slabs of
:data:`SLAB_VOXELS` voxels, so the extra memory does not grow with the image. Ids may be any
non-negative integers (sparse, near 2**63): nothing is allocated by the largest id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SLAB_VOXELS = 1 << 22  # voxels per slab: about 100 MB of temporaries at most
SLAB_BYTES_PER_VOXEL = 48  # what one slab's unique/inverse/keys take, per voxel (measured)
# A row (true id, predicted id, count: int64 each) and what summing equal rows takes per row
# (:func:`combine`: the sorts, inverses and keys of :func:`_merge`).
TABLE_BYTES_PER_ROW = 128


@dataclass(frozen=True)
class Contingency:
    """Voxel counts of the (true id, predicted id) pairs of two label images, 0 included.

    Attributes:
        true_id, pred_id: ``(P,)`` the ids of each pair (sorted by true id, then predicted id).
        count: ``(P,)`` int64 voxels the pair shares; every count is > 0.
    """

    true_id: np.ndarray
    pred_id: np.ndarray
    count: np.ndarray


def _flat(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"segments must be integer labels, got dtype {array.dtype}")
    return array.reshape(-1)  # a view for the contiguous arrays readers return


def _merge(true_id: np.ndarray, pred_id: np.ndarray, count: np.ndarray) -> Contingency:
    """Sum the counts of equal (true, predicted) pairs."""
    if not len(count):
        return Contingency(true_id, pred_id, count.astype(np.int64))
    _, t_index = np.unique(true_id, return_inverse=True)
    p_values, p_index = np.unique(pred_id, return_inverse=True)
    keys = t_index.astype(np.int64) * len(p_values) + p_index
    keys, where, summed = np.unique(keys, return_index=True, return_inverse=True)[:3]
    counts = np.bincount(summed.reshape(-1), weights=count, minlength=len(keys))
    return Contingency(true_id[where], pred_id[where], np.rint(counts).astype(np.int64))


def _pairs(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(true ids, predicted ids, counts)`` of one slab's flat labels, sorted by true then
    predicted id. Small ids (every pair fits a table of about the slab's size: a slab's own
    components, compact instance ids) are counted by ``bincount``, ten times faster than the
    sorts that any other ids need; both give the same rows."""
    span_g, span_p = (int(g.max()) + 1, int(p.max()) + 1) if g.size else (0, 0)
    if g.size and g.min() >= 0 and p.min() >= 0 and span_g * span_p <= max(2 * g.size, 1 << 16):
        keys = g.astype(np.int64)
        keys *= span_p
        keys += p.astype(np.int64)
        counts = np.bincount(keys, minlength=span_g * span_p)
        del keys
        found = np.flatnonzero(counts)
        t, q = np.divmod(found, span_p)
        return t.astype(g.dtype), q.astype(p.dtype), counts[found]
    g_values, g_index = np.unique(g, return_inverse=True)
    p_values, p_index = np.unique(p, return_inverse=True)
    keys, counts = np.unique(g_index.astype(np.int64) * len(p_values) + p_index, return_counts=True)
    t, q = np.divmod(keys, len(p_values))
    return g_values[t], p_values[q], counts


def contingency(pred: np.ndarray, gt: np.ndarray, slab_voxels: int | None = None) -> Contingency:
    """The table of two integer label images ``(*spatial)`` of the same shape, counted
    ``slab_voxels`` (default :data:`SLAB_VOXELS`) at a time.

    Raises:
        ValueError: the shapes differ, or the labels are not integers.
    """
    if np.shape(pred) != np.shape(gt):
        raise ValueError(f"prediction shape {np.shape(pred)} differs from ground truth "
                         f"{np.shape(gt)}")  # fmt: skip
    pred, gt = _flat(pred), _flat(gt)
    slab_voxels = slab_voxels or SLAB_VOXELS
    parts = []
    for start in range(0, pred.size, slab_voxels):
        parts.append(_pairs(pred[start : start + slab_voxels], gt[start : start + slab_voxels]))
    if not parts:
        empty = np.zeros(0, np.int64)
        return Contingency(empty, empty, empty)
    if len(parts) == 1:
        return Contingency(*parts[0][:2], parts[0][2].astype(np.int64))
    return _merge(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def combine(tables: Sequence[Contingency]) -> Contingency:
    """One table from the tables of several parts of a pair (its slabs): the counts of equal
    (true, predicted) pairs summed, sorted as :func:`contingency` sorts them. Parts of the same
    id dtype (a uint64 part beside an int64 one would become float64)."""
    tables = [t for t in tables if len(t.count)]
    if not tables:
        empty = np.zeros(0, np.int64)
        return Contingency(empty, empty, empty)
    fields = ("true_id", "pred_id", "count")
    return _merge(*(np.concatenate([getattr(t, f) for t in tables]) for f in fields))


def adapted_rand_error(table: Contingency) -> float:
    """Foreground-restricted adapted Rand error of ``skimage.metrics.adapted_rand_error`` with
    true background (0) ignored and every predicted background voxel a segment of its own (the
    ISBI 2012 scoring); ``nan`` without true objects."""
    fg = table.true_id != 0
    if not fg.any():
        return math.nan
    count = table.count[fg].astype(np.float64)
    joined = table.pred_id[fg] != 0  # predicted background: singletons, no pairs
    sum_p2 = float(np.sum(count[joined] ** 2 - count[joined]))
    _, true_rows = np.unique(table.true_id[fg], return_inverse=True)
    a = np.bincount(true_rows.reshape(-1), weights=count)
    _, pred_cols = np.unique(table.pred_id[fg][joined], return_inverse=True)
    b = np.bincount(pred_cols.reshape(-1), weights=count[joined])
    sum_a2, sum_b2 = float(a @ a - a.sum()), float(b @ b - b.sum())
    if sum_a2 + sum_b2 == 0:  # every object a single voxel, each alone: as skimage, 0 / 0
        return math.nan
    return 1.0 - sum_p2 / (0.5 * sum_a2 + 0.5 * sum_b2)


def variation_of_information(table: Contingency) -> float:
    """Split + merge entropies in bits (``skimage.metrics.variation_of_information`` summed)
    over the true objects (background 0 left out), predicted background one segment; ``nan``
    without true objects."""
    fg = table.true_id != 0
    if not fg.any():
        return math.nan
    p = table.count[fg] / table.count[fg].sum()
    _, rows = np.unique(table.true_id[fg], return_inverse=True)
    _, cols = np.unique(table.pred_id[fg], return_inverse=True)
    px = np.bincount(rows.reshape(-1), weights=p)[rows.reshape(-1)]
    py = np.bincount(cols.reshape(-1), weights=p)[cols.reshape(-1)]
    return float(-np.sum(p * np.log2(p / py)) - np.sum(p * np.log2(p / px)))
