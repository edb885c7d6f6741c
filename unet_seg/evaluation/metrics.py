"""Segmentation figures of a prediction against ground truth, on numpy arrays of any dimension.

Semantic: Dice and IoU per class, pixel error. Segments (instance labelings, 0 = background):
adapted Rand error and variation of information (as skimage.metrics computes them, from one
contingency table counted slab by slab). Object matching, AP,
precision/recall/F1 and panoptic quality are in :mod:`unet_seg.evaluation.instances`.
"""

from __future__ import annotations

import math

import numpy as np

from unet_seg.evaluation.contingency import SLAB_VOXELS, contingency
from unet_seg.evaluation.contingency import adapted_rand_error as contingency_rand_error
from unet_seg.evaluation.contingency import variation_of_information as contingency_vi


def _check_shapes(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")


def confusion_counts(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, 3)`` int64 counts of true positives, false positives, false negatives per class,
    counted slab by slab (no per-voxel int64 copy of the images)."""
    _check_shapes(pred, gt)
    if (
        max(int(pred.max(initial=0)), int(gt.max(initial=0))) >= num_classes
        or min(int(pred.min(initial=0)), int(gt.min(initial=0))) < 0
    ):
        raise ValueError(f"label values outside the classes 0..{num_classes - 1}")
    joint = np.zeros(num_classes**2, np.int64)
    flat_pred, flat_gt = np.asarray(pred).reshape(-1), np.asarray(gt).reshape(-1)
    for start in range(0, flat_pred.size, SLAB_VOXELS):
        p = flat_pred[start : start + SLAB_VOXELS].astype(np.int64)
        g = flat_gt[start : start + SLAB_VOXELS].astype(np.int64)
        joint += np.bincount(g * num_classes + p, minlength=num_classes**2)
    joint = joint.reshape(num_classes, num_classes)  # rows: truth, columns: prediction
    tp = np.diag(joint)
    return np.stack([tp, joint.sum(0) - tp, joint.sum(1) - tp], axis=1)


def dice_iou(counts: np.ndarray, absent: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU per class from :func:`confusion_counts`, each ``(K,)``.

    A class absent from both prediction and truth has no overlap to score: it gets ``absent``
    (1.0, perfect, for per-file reports; ``nan`` to leave it out of a mean, as validation does).
    """
    tp, fp, fn = counts[:, 0].astype(float), counts[:, 1], counts[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), absent)
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), absent)
    return dice, iou


def pixel_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Fraction of voxels whose class differs."""
    _check_shapes(pred, gt)
    flat_pred, flat_gt = np.asarray(pred).reshape(-1), np.asarray(gt).reshape(-1)
    if not flat_pred.size:
        return math.nan
    wrong = sum(
        int(np.count_nonzero(flat_pred[s : s + SLAB_VOXELS] != flat_gt[s : s + SLAB_VOXELS]))
        for s in range(0, flat_pred.size, SLAB_VOXELS)
    )
    return wrong / flat_pred.size


def rand_error(pred_segments: np.ndarray, gt_segments: np.ndarray) -> float:
    """Foreground-restricted adapted Rand error (ISBI 2012), 0 is perfect; ``nan`` without objects.

    Ground-truth background (0) is left out. As in the ISBI / SNEMI3D scoring scripts, every
    predicted background voxel is a segment of its own, so a background gap can never merge the
    cells on either side of it into one segment. Equal to ``skimage.metrics.adapted_rand_error``
    on those segments, from the :mod:`~unet_seg.evaluation.contingency` table.
    """
    _check_shapes(pred_segments, gt_segments)
    return contingency_rand_error(contingency(pred_segments, gt_segments))


def variation_of_information(pred_segments: np.ndarray, gt_segments: np.ndarray) -> float:
    """Split + merge entropies in bits over the ground-truth objects (background 0 left out),
    predicted background counted as one segment; 0 is perfect, ``nan`` without objects."""
    _check_shapes(pred_segments, gt_segments)
    return contingency_vi(contingency(pred_segments, gt_segments))
