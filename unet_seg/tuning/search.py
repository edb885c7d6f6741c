"""Choosing the instance post-processing from validation data instead of by hand.

For each method (``cc``, ``distance``, ``seeded``) a small grid of its parameters is tried on the
validation images' probabilities, and the values with the best score are kept: the mean instance
AP over IoU 0.5:0.95 pooled over all validation objects (``objective="ap"``), or the mean
foreground-restricted Rand error (``"rand_error"``, for membrane data whose segments are cells).
Sizes and distances in the grid scale with the median size of the true objects, so the same grid
serves small nuclei and large cells.

A few validation objects often give the same segmentation, hence the same score, for a whole
range of settings (every seed threshold between 0.3 and 0.9, say). The tie goes to the setting in
the middle of that range (:func:`plateau_centre`), the one farthest from where the score changes,
rather than to the first one tried, which sits on the edge of it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from unet_seg.evaluation.instances import match_all, pool, scores
from unet_seg.evaluation.metrics import rand_error
from unet_seg.instances.methods import METHOD_PARAMS, METHODS, InstanceOptions, segment

OBJECTIVES = ("ap", "rand_error")
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
# 0: every voxel of an object is a seed, so each foreground component is one object; the tuning
# falls back to it where the interior cores split objects more often than they part touching
# ones (ISBI cells: the interior dips inside a cell at its organelles).
SEED_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SIZE_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.35)  # of the median true object's volume
RADIUS_FRACTIONS = (0.25, 0.4, 0.6, 0.8, 1.0)  # of the median true object's radius


def median_object_size(truths: Sequence[np.ndarray]) -> float:
    """Median voxel count of the objects in the label images ``truths`` (1 if there are none).
    Counted per id present (not indexed by id), so sparse ids near 2**40 cost nothing."""
    sizes = [np.unique(t[t != 0], return_counts=True)[1] for t in truths if t.any()]
    sizes = np.concatenate(sizes) if sizes else np.zeros(0)
    return float(np.median(sizes)) if sizes.size else 1.0


# Rand error scores cells that tile the image, every predicted background voxel being a
# segment of its own: a foreground threshold of 0 lets the watershed give every voxel to a cell
# (the membranes become the lines where cells meet), and near-certain seeds keep a faint gap in
# a membrane from joining two cells.
FILL_THRESHOLD = 0.0
MEMBRANE_SEED_THRESHOLDS = (0.95, 0.98)


def check_request(methods: Sequence[str], objective: str) -> None:
    """Raise ValueError for an unknown method or objective (before any image is predicted)."""
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def candidates(
    method: str, median_size: float, ndim: int, objective: str = "ap"
) -> list[dict[str, Any]]:
    """The parameter grid of ``method`` for objects of ``median_size`` voxels in ``ndim`` D
    (for ``objective="rand_error"`` also filling the image and near-certain seeds)."""
    check_request((method,), objective)
    membranes = objective == "rand_error"
    sizes = sorted({round(f * median_size) for f in SIZE_FRACTIONS})
    radius = (median_size / (math.pi if ndim == 2 else 4 / 3 * math.pi)) ** (1 / ndim)
    distances = sorted({max(1, round(f * radius)) for f in RADIUS_FRACTIONS})
    values = {
        "min_size": sizes,
        "min_distance": distances,
        "foreground_threshold": [FILL_THRESHOLD] * membranes + list(THRESHOLDS),
        "seed_threshold": list(SEED_THRESHOLDS) + list(MEMBRANE_SEED_THRESHOLDS) * membranes,
    }
    names = METHOD_PARAMS[method]
    grid = itertools.product(*(values[n] for n in names))
    return [dict(zip(names, combo, strict=True)) for combo in grid]


TIE = 1e-12  # scores closer than this are the same segmentation's, not a better one


def plateau_centre(tied: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The setting among ``tied`` (equally scored settings of one method's grid, each a
    ``{name: value}`` with the same names) nearest the middle of them all.

    Per parameter, each setting's value is ranked among the values the tied settings take,
    scaled to [0, 1]; the setting with the smallest sum of squared distances from the mean
    rank wins (the first of equals, in the order of ``tied``)."""
    if not tied:
        raise ValueError("no settings to choose from")
    distance = np.zeros(len(tied))
    for name in tied[0]:
        levels = sorted({t[name] for t in tied})
        rank = np.array([levels.index(t[name]) for t in tied]) / max(len(levels) - 1, 1)
        distance += (rank - rank.mean()) ** 2
    # rounded: equal distances summed in another order must stay equal (first of equals)
    return dict(tied[int(np.argmin(np.round(distance, 9)))])


def score(predictions: Iterable[np.ndarray], truths: Sequence[np.ndarray], objective: str) -> float:
    """The objective of predicted against true label images; higher is better for both (the
    Rand error is negated). ``predictions`` may be made one at a time (a generator): each is
    scored and let go before the next, so the search holds one segmentation, not one per case."""
    if objective == "ap":
        return scores(pool(match_all(p, t) for p, t in zip(predictions, truths, strict=True)))["ap"]
    if objective == "rand_error":
        errors = [rand_error(p, t) for p, t in zip(predictions, truths, strict=True)]
        errors = [e for e in errors if not math.isnan(e)]
        return -float(np.mean(errors)) if errors else 0.0
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def tune(
    probabilities: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    roles: Mapping[str, int],
    methods: Sequence[str] = METHODS,
    objective: str = "ap",
    spacings: Sequence[Sequence[float] | None] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Search each method's grid on validation data.

    Args:
        probabilities: per image ``(K, *spatial)`` class probabilities.
        truths: per image the true object ids ``(*spatial)``.
        roles: ``foreground_class``, ``background_class``, ``interior_class`` of the model.
        methods: the methods to try.
        objective: ``"ap"`` or ``"rand_error"``.
        spacings: per image voxel size for the distance watershed, or None.

    Returns:
        plain values: ``{"objective", "method": the best, "score": its objective (AP, or Rand
        error), "roles", "methods": {method: best params}, "scores": {method: objective}}``.
    """
    if len(probabilities) != len(truths) or not truths:
        raise ValueError(f"need as many probability maps as truths, got {len(probabilities)} "
                         f"and {len(truths)}")  # fmt: skip
    check_request(methods, objective)
    spacings = spacings or [None] * len(truths)
    median = median_object_size(truths)
    ndim = truths[0].ndim
    grids = {m: candidates(m, median, ndim, objective) for m in methods}
    bar = tqdm(total=sum(map(len, grids.values())), desc="tune", unit="setting",
               disable=None if progress is None else not progress)  # fmt: skip
    best: dict[str, tuple[float, dict]] = {}
    with bar:
        for method, grid in grids.items():
            values = []
            for params in grid:
                full = InstanceOptions(method, **roles, **params)
                predictions = (segment(p, full, s)
                               for p, s in zip(probabilities, spacings, strict=True))  # fmt: skip
                values.append(score(predictions, truths, objective))
                bar.update()
            top = max(values)
            tied = [params for params, v in zip(grid, values, strict=True) if v >= top - TIE]
            best[method] = (top, plateau_centre(tied))
    chosen = max(best, key=lambda m: best[m][0])
    sign = 1.0 if objective == "ap" else -1.0
    return {
        "objective": objective,
        "method": chosen,
        "score": sign * best[chosen][0],
        "roles": {k: int(v) for k, v in roles.items()},
        "methods": {m: dict(p) for m, (_, p) in best.items()},
        "scores": {m: sign * v for m, (v, _) in best.items()},
    }
