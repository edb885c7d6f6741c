"""Validation metrics: Dice, IoU, pixel error, and the ISBI 2012 segmentation scores.

Overlap scores (Dice, IoU, pixel error) are pooled over every voxel of the epoch. The ISBI scores
compare *segmentations*: the connected components (face connectivity) of the ``region_class``
voxels in the label and in the prediction, per image, with the label's other voxels left out
("foreground-restricted", as in Arganda-Carreras et al. 2015). One definition, in
:mod:`unet_seg.evaluation.metrics`, serves training and ``unet-seg-evaluate``:

- ``rand_error``: ``skimage.metrics.adapted_rand_error`` (1 - Rand F-score; 0 is perfect). As in
  the SNEMI3D / ISBI scoring scripts, predicted background voxels count as one-voxel segments;
  skimage alone would make them one huge segment that merges every cell it touches;
- ``vi``: ``skimage.metrics.variation_of_information``, split + merge entropies in bits (predicted
  background is one segment here, as in the CREMI scores).

The same segments are matched as objects (:mod:`unet_seg.evaluation.instances`), pooled over all
validation windows: ``ap`` (mean over IoU 0.5:0.95), ``ap50`` and ``pq`` (panoptic quality).
Objects cut by a window's edge count as they are seen.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.measure import label as connected_components

from unet_seg.evaluation.instances import MatchCounts, match_all, pool, scores
from unet_seg.evaluation.metrics import (
    confusion_counts,
    dice_iou,
    rand_error,
    variation_of_information,
)
from unet_seg.training.losses import IGNORE_INDEX


def segments(mask: np.ndarray) -> np.ndarray:
    """Connected components (face connectivity) of a boolean ``(*spatial)`` mask; 0 elsewhere."""
    return connected_components(mask, connectivity=1).astype(np.int64)


def segmentation_scores(
    pred: np.ndarray, target: np.ndarray, region_class: int = 1, ignore_index: int = IGNORE_INDEX
) -> tuple[float, float]:
    """``(rand_error, vi)`` of one class map ``pred`` against ``target``, both ``(*spatial)``.

    ``nan`` for both when the target has no ``region_class`` voxel (the scores are undefined).
    """
    return _scores(*segment_pair(pred, target, region_class))


def segment_pair(
    pred: np.ndarray, target: np.ndarray, region_class: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``(predicted, true)`` segments: the components of ``region_class`` in each map."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    # Ignored voxels are not region_class: they are left out of the true segments.
    return segments(pred == region_class), segments(target == region_class)


def _scores(pred_seg: np.ndarray, true_seg: np.ndarray) -> tuple[float, float]:
    if not true_seg.any():
        return math.nan, math.nan
    return rand_error(pred_seg, true_seg), variation_of_information(pred_seg, true_seg)


class SegmentationMetrics:
    """Accumulates validation figures over an epoch of ``(N, *spatial)`` class-index maps.

    Args:
        num_classes: classes of the model; Dice and IoU average the classes ``1..K-1``.
        region_class: the class whose connected components are the segments for Rand error and VI
            (the cell interiors for ISBI 2012).
        ignore_index: label value of voxels that no figure counts.
    """

    def __init__(
        self, num_classes: int, region_class: int = 1, ignore_index: int = IGNORE_INDEX
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 0 <= region_class < num_classes:
            raise ValueError(f"region_class {region_class} is not a class of {num_classes}")
        self.num_classes = num_classes
        self.region_class = region_class
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.tp = np.zeros(self.num_classes, dtype=np.int64)
        self.fp = np.zeros(self.num_classes, dtype=np.int64)
        self.fn = np.zeros(self.num_classes, dtype=np.int64)
        self.wrong = 0
        self.counted = 0
        self.rand_errors: list[float] = []
        self.vis: list[float] = []
        self.matches: list[dict[float, MatchCounts]] = []

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add a batch: ``pred``, ``target`` int ``(N, *spatial)`` (``target`` may hold ignore)."""
        pred = torch.as_tensor(pred).detach().cpu().numpy()
        target = torch.as_tensor(target).detach().cpu().numpy()
        if pred.shape != target.shape:
            raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
        valid = target != self.ignore_index
        counts = confusion_counts(pred[valid], target[valid], self.num_classes)
        self.tp += counts[:, 0]
        self.fp += counts[:, 1]
        self.fn += counts[:, 2]
        self.wrong += int(counts[:, 1].sum())  # each wrong voxel is one class's false positive
        self.counted += int(valid.sum())
        for pred_i, target_i in zip(pred, target, strict=True):
            pred_seg, true_seg = segment_pair(pred_i, target_i, self.region_class)
            self.matches.append(match_all(pred_seg, true_seg))
            are, vi = _scores(pred_seg, true_seg)
            if not math.isnan(are):
                self.rand_errors.append(are)
                self.vis.append(vi)

    def compute(self) -> dict[str, float]:
        """``{"dice", "iou", "pixel_error", "rand_error", "vi", "ap", "ap50", "pq"}``; ``nan``
        where nothing counted.

        A class absent from both label and prediction has no Dice and is left out of the mean.
        """
        counts = np.stack([self.tp, self.fp, self.fn], axis=1)[1:]
        dice, iou = dice_iou(counts, absent=math.nan)
        dice, iou = dice[~np.isnan(dice)], iou[~np.isnan(iou)]
        objects = scores(pool(self.matches)) if self.matches else {}
        return {
            "dice": float(dice.mean()) if dice.size else math.nan,
            "iou": float(iou.mean()) if iou.size else math.nan,
            "pixel_error": self.wrong / self.counted if self.counted else math.nan,
            "rand_error": float(np.mean(self.rand_errors)) if self.rand_errors else math.nan,
            "vi": float(np.mean(self.vis)) if self.vis else math.nan,
            **{k: objects.get(k, math.nan) for k in ("ap", "ap50", "pq")},
        }
