"""Folds: they partition the cases, deterministically; a test split stays out; fewer cases than
folds cut every image into slabs that partition it; settings that cannot work are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unet_seg.data.folds import (
    FoldSpec,
    assign_folds,
    fold_cases,
    slab_ranges,
    slab_regions,
    split_pairs,
)
from unet_seg.data.regions import Region
from unet_seg.errors import UsageError

NAMES = [f"case_{i:02d}" for i in range(13)]


@pytest.mark.parametrize("folds", [2, 3, 5, 13])
def test_every_case_is_validated_exactly_once(folds):
    val = []
    for fold in range(folds):
        train, held = fold_cases(NAMES, FoldSpec(folds, fold, seed=7))
        assert not set(train) & set(held) and sorted(train + held) == sorted(NAMES)
        assert len(held) in (len(NAMES) // folds, -(-len(NAMES) // folds))  # sizes differ by 1
        val += held
    assert sorted(val) == sorted(NAMES)


def test_the_assignment_depends_on_names_and_seed_not_on_order():
    first = assign_folds(NAMES, 5, seed=3)
    assert assign_folds(NAMES[::-1], 5, seed=3) == first
    assert assign_folds(NAMES, 5, seed=4) != first
    # A fixed value: a change of the shuffle would silently move every published fold's cases.
    assert [first[n] for n in NAMES] == [4, 0, 2, 1, 1, 0, 3, 2, 2, 0, 4, 3, 1]
    assert sorted(first.values()) == sorted([k % 5 for k in range(13)])


def test_test_names_stay_out_of_every_fold():
    spec = FoldSpec(4, 0, test_names=("case_00", "case_05"))
    seen = set()
    for fold in range(4):
        train, val = fold_cases(NAMES, FoldSpec(4, fold, test_names=spec.test_names))
        assert not {"case_00", "case_05"} & set(train + val)
        seen |= set(val)
    assert seen == set(NAMES) - {"case_00", "case_05"}
    with pytest.raises(ValueError, match=r"cv.test_names \['nope'\] are not among the cases"):
        fold_cases(NAMES, FoldSpec(4, 0, test_names=("nope",)))
    with pytest.raises(ValueError, match="leave no case"):
        fold_cases(["a"], FoldSpec(2, 0, test_names=("a",)))


def test_pairs_split_by_stem_and_fewer_cases_than_folds_mean_slabs():
    pairs = [(Path(f"img/{n}.tif"), Path(f"lab/{n}.tif")) for n in NAMES[:3]]
    train, val, slabs = split_pairs(pairs, FoldSpec(3, 1))
    assert not slabs and len(val) == 1 and sorted(train + val) == sorted(pairs)
    train, val, slabs = split_pairs(pairs, FoldSpec(5, 1, test_names=("case_02",)))
    assert slabs and train == val == pairs[:2]


@pytest.mark.parametrize(
    ("cv", "message"),
    [
        ({"folds": 1}, "cv.folds must be a whole number >= 2"),
        ({"folds": 5, "fold": 5}, r"cv.fold=5: folds are numbered 0..4"),
        ({"folds": 5, "fold": -1}, "cv.fold must be a whole number >= 0"),
        ({"folds": "five"}, "cv.folds must be"),
    ],
)
def test_settings_that_cannot_work_are_refused(cv, message):
    with pytest.raises(UsageError, match=message):
        FoldSpec.from_config(cv)


def test_slab_ranges_cover_the_axis():
    assert slab_ranges(10, 3) == [range(0, 3), range(3, 6), range(6, 10)]
    with pytest.raises(ValueError, match="2 voxels cannot be cut into 3 slabs"):
        slab_ranges(2, 3)
    tiny = Region(np.zeros((1, 2, 2), np.float32), np.zeros((2, 2), np.int64), None, "tiny")
    with pytest.raises(ValueError, match=r"^tiny: cv\.folds=3 slabs: 2 voxels cannot be cut"):
        slab_regions([tiny], FoldSpec(3, 0), "val")


@pytest.mark.parametrize("shape", [(23, 40), (9, 31, 12)])
def test_slabs_partition_each_image_along_its_longest_axis(shape, rng):
    label = rng.integers(0, 2, shape)
    image, weight = rng.random((2, *shape)), rng.random(shape)
    region = Region(image.astype(np.float32), label, weight.astype(np.float32), "img",
                    label * 7, (1.0,) * len(shape))  # fmt: skip
    axis = int(np.argmax(shape))
    covered = np.zeros(shape[axis], int)
    for fold in range(4):
        spec = FoldSpec(4, fold)
        (val,) = slab_regions([region], spec, "val")
        train = slab_regions([region], spec, "train")
        assert all(p.shape[:axis] + p.shape[axis + 1 :] == shape[:axis] + shape[axis + 1 :]
                   for p in [val, *train])  # fmt: skip
        assert sum(p.shape[axis] for p in [val, *train]) == shape[axis]
        start, stop = (int(v) for v in val.name.split("[")[1].rstrip("]").split(":"))
        assert val.name == f"img{'zyx'[-len(shape) :][axis]}[{start}:{stop}]"
        covered[start:stop] += 1
        # Every array is cut alike: the slab holds the image's own voxels.
        index = (slice(None),) * axis + (slice(start, stop),)
        np.testing.assert_array_equal(val.label, label[index])
        np.testing.assert_array_equal(val.image, region.image[(slice(None), *index)])
        np.testing.assert_array_equal(val.weight, region.weight[index])
        np.testing.assert_array_equal(val.instances, label[index] * 7)

        def start_of(part):
            return int(part.name.split("[")[1].split(":")[0])

        parts = sorted([val, *train], key=start_of)
        rebuilt = np.concatenate([p.label for p in parts], axis=axis)
        np.testing.assert_array_equal(rebuilt, label)
    assert (covered == 1).all()  # every voxel validated by exactly one fold
