"""Instance method parameters: resolving tuned and explicit values, and the grid search."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from unet_seg.evaluation.instances import match_all, pool, scores
from unet_seg.evaluation.metrics import rand_error
from unet_seg.instances.methods import InstanceOptions, resolve, segment
from unet_seg.tuning.search import candidates, median_object_size, plateau_centre, tune

ROLES = {"foreground_class": 1, "background_class": 0, "interior_class": 1}


def boundary_probs(objects: np.ndarray, noise: np.random.Generator) -> np.ndarray:
    """``(3, *spatial)`` probabilities of a decent boundary-aware net: interior rising towards
    each object's centre, some noise, a noisy speck of false foreground."""
    depth = np.zeros(objects.shape)
    for index in np.unique(objects[objects > 0]):
        inside = objects == index
        depth[inside] = ndi.distance_transform_edt(inside)[inside]
    interior = np.clip((depth - 1) / 3, 0, 1) * 0.9
    background = (objects == 0) * 0.9 + 0.05
    interior = np.clip(interior + noise.normal(0, 0.03, objects.shape), 0, 1 - background)
    probs = np.stack([background, interior, 1 - background - interior])
    probs[:, 1, 1] = [0.3, 0.1, 0.6]  # a one-pixel false object, removed by a min_size
    return probs.astype(np.float32)


def touching_pairs(shape=(40, 60)) -> np.ndarray:
    objects = np.zeros(shape, np.int32)
    objects[5:17, 4:16], objects[5:17, 16:28] = 1, 2  # touching along x
    objects[22:36, 10:22], objects[24:34, 22:30] = 3, 4
    objects[25:33, 40:50] = 5
    return objects


def test_resolve_layers_defaults_tuned_and_overrides() -> None:
    assert resolve() == InstanceOptions()
    tuned = {"method": "seeded", "roles": {"interior_class": 2},
             "methods": {"seeded": {"seed_threshold": 0.8, "min_size": 30},
                         "cc": {"min_size": 7}}}  # fmt: skip
    options = resolve(tuned)
    assert options.method == "seeded" and options.seed_threshold == 0.8
    assert options.interior_class == 2 and options.min_size == 30
    # The user's method wins, with that method's tuned values; None means "not set".
    options = resolve(tuned, {"method": "cc", "min_size": None, "min_distance": "3"})
    assert options.method == "cc" and options.min_size == 7 and options.min_distance == 3
    with pytest.raises(ValueError, match=r"instances\.method"):
        resolve(overrides={"method": "magic"})
    with pytest.raises(ValueError, match="unknown instance options"):
        resolve(overrides={"split": True})
    with pytest.raises(ValueError, match="seed_threshold"):
        resolve(overrides={"seed_threshold": 1.5})


def test_candidate_grid_scales_with_object_size() -> None:
    truths = [touching_pairs()]
    median = median_object_size(truths)
    assert median == 144  # 12 x 12 squares
    grid = candidates("distance", median, 2)
    assert {g["min_size"] for g in grid} == {0, 7, 14, 29, 50}
    assert max(g["min_distance"] for g in grid) == 7  # the radius of a disc of 144 pixels
    assert len(candidates("seeded", median, 2)) == 5 * 8 * 5
    membranes = candidates("seeded", median, 2, "rand_error")
    assert len(membranes) == 6 * 10 * 5
    assert {g["foreground_threshold"] for g in membranes} == {0.0, 0.3, 0.4, 0.5, 0.6, 0.7}
    assert max(g["seed_threshold"] for g in membranes) == 0.98
    with pytest.raises(ValueError, match="method"):
        candidates("magic", median, 2)


def test_tuning_prefers_seeds_on_touching_objects(rng) -> None:
    truths = [touching_pairs(), touching_pairs()[::-1].copy()]
    probs = [boundary_probs(t, rng) for t in truths]
    result = tune(probs, truths, ROLES, methods=("cc", "seeded"), progress=False)
    assert result["method"] == "seeded"
    assert result["scores"]["seeded"] > result["scores"]["cc"] + 0.1
    assert result["score"] == result["scores"]["seeded"]
    # The stored values reproduce the score through predict's resolve + segment.
    options = resolve(result)
    assert options.min_size >= 2  # the one-pixel speck is gone
    counts = pool(match_all(segment(p, options), t) for p, t in zip(probs, truths, strict=True))
    assert scores(counts)["ap"] == pytest.approx(result["score"], abs=1e-12)
    assert all(isinstance(v, int | float) for v in result["methods"]["seeded"].values())


def test_rand_error_objective(rng) -> None:
    truths = [touching_pairs()]
    probs = [boundary_probs(t, rng) for t in truths]
    result = tune(probs, truths, ROLES, methods=("cc", "seeded"), objective="rand_error",
                  progress=False)  # fmt: skip
    assert result["objective"] == "rand_error" and 0 <= result["score"] < result["scores"]["cc"]
    with pytest.raises(ValueError, match="objective"):
        tune(probs, truths, ROLES, objective="dice")


def test_membrane_tuning_fills_the_image_with_cells() -> None:
    """Cells between membranes predicted thicker than drawn: every voxel of a cell the
    prediction calls membrane counts as a segment of its own, so Rand error wants cells that
    tile the image (foreground threshold 0), not thresholded ones."""
    truth = np.zeros((48, 48), np.int32)
    for i, (r, c) in enumerate([(0, 0), (0, 24), (24, 0), (24, 24)]):
        truth[r + 1 : r + 23, c + 1 : c + 23] = i + 1  # true membranes: 2 px between cells
    membrane = np.zeros(truth.shape, np.float32)
    for line in (0, 23, 24, 47):
        membrane[max(0, line - 3) : line + 4, :] = 0.9
        membrane[:, max(0, line - 3) : line + 4] = 0.9  # predicted: 7 px wide
    probs = np.stack([1 - membrane, membrane])  # class 0 = cell, as in ISBI
    roles = {"foreground_class": 0, "background_class": 1, "interior_class": 0}
    result = tune([probs], [truth], roles, methods=("seeded",), objective="rand_error",
                  progress=False)  # fmt: skip
    assert result["methods"]["seeded"]["foreground_threshold"] == 0.0
    assert result["score"] == pytest.approx(0.0, abs=1e-9)  # the four cells, exactly
    thresholded = resolve(result, {"foreground_threshold": 0.3})
    assert rand_error(segment(probs, thresholded), truth) > 0.2


def test_plateau_centre_takes_the_middle_of_a_tie() -> None:
    seeds = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    tied = [{"seed_threshold": s, "min_size": m} for m in (10, 20, 30) for s in seeds]
    assert plateau_centre(tied) == {"seed_threshold": 0.6, "min_size": 20}
    assert plateau_centre([{"min_size": 5}]) == {"min_size": 5}
    # Two middles: the first one tried.
    assert plateau_centre([{"t": 0.3}, {"t": 0.4}]) == {"t": 0.3}
    with pytest.raises(ValueError, match="no settings"):
        plateau_centre([])


def test_tied_seed_thresholds_resolve_to_the_middle() -> None:
    """Two separated objects whose interiors are certain: every seed threshold gives the same
    objects, and the tuning keeps the middle one, not the lowest, which would be the first to
    merge touching objects the validation images happen not to contain."""
    truth = np.zeros((40, 40), np.int32)
    truth[4:16, 4:16], truth[22:36, 20:34] = 1, 2
    interior = np.zeros(truth.shape, np.float32)
    interior[6:14, 6:14] = interior[24:34, 22:32] = 0.99
    background = (truth == 0).astype(np.float32) * 0.98 + 0.01
    probs = np.stack([background, interior * (1 - background), np.zeros_like(background)])
    probs[2] = 1 - probs[0] - probs[1]
    result = tune([probs], [truth], ROLES, methods=("seeded",), progress=False)
    chosen = result["methods"]["seeded"]
    assert result["score"] == pytest.approx(1.0)
    # The middle of 0.0, 0.3, ..., 0.9, all tied (0.5 and 0.6 equally: the first tried).
    assert chosen["seed_threshold"] == 0.5
    assert chosen["foreground_threshold"] == 0.5  # the middle of 0.3..0.7


def test_seeds_that_split_objects_are_switched_off() -> None:
    """Long objects whose interior dips in the middle (as a cell's does at an organelle): every
    seed threshold the dip falls under cuts each object in two, and threshold 0 (each foreground
    component one object) is the one that finds them."""
    truth = np.zeros((40, 48), np.int32)
    truth[4:16, 4:40], truth[24:36, 8:44] = 1, 2
    interior = np.zeros(truth.shape, np.float32)
    for row, left in ((4, 4), (24, 8)):
        interior[row + 2 : row + 10, left + 2 : left + 14] = 0.95
        interior[row + 2 : row + 10, left + 22 : left + 34] = 0.95
        interior[row + 2 : row + 10, left + 14 : left + 22] = 0.05  # the dip
    background = (truth == 0).astype(np.float32) * 0.98 + 0.01
    probs = np.stack([background, interior * (1 - background), np.zeros_like(background)])
    probs[2] = 1 - probs[0] - probs[1]
    result = tune([probs], [truth], ROLES, methods=("seeded",), progress=False)
    assert result["methods"]["seeded"]["seed_threshold"] == 0.0
    assert result["score"] == pytest.approx(1.0)
    split = resolve(result, {"seed_threshold": 0.3})
    assert segment(probs, split).max() == 4
