"""The test figures of ``bench_accuracy.py``, the same for every method: class maps in, the
project's own evaluation functions (:mod:`unet_seg.evaluation`) out.

Dice and IoU of the dataset's ``dice_class`` and the pixel error from the confusion counts summed
over the test cases; the adapted Rand error and VI (foreground-restricted: true background is
left out) per case, averaged; AP@0.5 and mean AP 0.5:0.95 from the object matches pooled over
all cases. Predicted objects are the face-connected components of ``object_class``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from unet_seg.evaluation.evaluate import pair_figures
from unet_seg.evaluation.instances import pool, scores
from unet_seg.evaluation.metrics import dice_iou

FIGURES = ("dice", "iou", "pixel_error", "rand_error", "vi", "ap", "ap50")


def figures(predictions: Sequence[np.ndarray], data) -> dict[str, float]:
    """The figures of ``predictions`` (one int class map ``(*spatial)`` per test case of the
    ``accuracy_data.Dataset`` ``data``, in order)."""
    if len(predictions) != len(data.test):
        raise ValueError(f"{len(predictions)} predictions for {len(data.test)} test cases")
    counts, matches, rand, vi = 0, [], [], []
    for pred, case in zip(predictions, data.test, strict=True):
        if pred.shape != case.classes.shape:
            raise ValueError(f"{case.name}: prediction {pred.shape}, truth {case.classes.shape}")
        pred = np.asarray(pred, np.int64)
        found = ndi.label(pred == data.object_class)[0]
        row, pair_counts, pair_matches = pair_figures(
            pred, case.classes, data.num_classes, data.object_class, found, case.objects
        )
        counts = counts + pair_counts
        matches.append(pair_matches)
        rand.append(row["rand_error"])
        vi.append(row["vi"])
    dice, iou = dice_iou(np.asarray(counts))
    objects = scores(pool(matches))
    voxels = sum(case.classes.size for case in data.test)
    return {
        "dice": float(dice[data.dice_class]),
        "iou": float(iou[data.dice_class]),
        "pixel_error": float(
            np.asarray(counts)[:, 1].sum() / voxels
        ),  # every wrong voxel is one FP
        "rand_error": float(np.nanmean(rand)),
        "vi": float(np.nanmean(vi)),
        "ap": objects["ap"],
        "ap50": objects["ap50"],
    }
