"""The contingency table gives skimage's Rand error and VI and the object overlaps exactly, slab by
slab, for ids of any size; and evaluate allocates no more than its memory guard counts."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage import metrics as skm

from tests.evaluation.test_evaluate import config
from unet_seg.evaluation import contingency as contingency_module
from unet_seg.evaluation import evaluate as evaluate_module
from unet_seg.evaluation import metrics as metrics_module
from unet_seg.evaluation.contingency import (
    adapted_rand_error,
    contingency,
    variation_of_information,
)
from unet_seg.evaluation.evaluate import evaluate, pair_bytes
from unet_seg.evaluation.instances import overlaps


def skimage_rand(pred: np.ndarray, gt: np.ndarray) -> float:
    """The ISBI scoring through skimage: predicted background voxels are singletons."""
    if not gt.any():
        return math.nan
    pred = pred.astype(np.int64)
    alone = (pred == 0) & (gt != 0)
    pred[alone] = pred.max() + 1 + np.arange(int(alone.sum()))
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(skm.adapted_rand_error(gt, pred, ignore_labels=(0,))[0])


def skimage_vi(pred: np.ndarray, gt: np.ndarray) -> float:
    if not gt.any():
        return math.nan
    return float(sum(skm.variation_of_information(gt, pred, ignore_labels=(0,))))


def blobs(rng, shape, level=0.5) -> np.ndarray:
    return ndi.label(ndi.gaussian_filter(rng.random(shape), 1.5) > level)[0]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("slab", [5, 1 << 22])
def test_rand_error_and_vi_equal_skimage(seed, slab):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(3, 40, size=1 + seed % 3))
    gt, pred = blobs(rng, shape), blobs(rng, shape, 0.45)
    if seed == 4:
        pred[:] = 0  # nothing found: every object split into singletons
    table = contingency(pred, gt, slab)
    assert adapted_rand_error(table) == pytest.approx(skimage_rand(pred, gt), abs=1e-12,
                                                      nan_ok=True)  # fmt: skip
    assert variation_of_information(table) == pytest.approx(skimage_vi(pred, gt), abs=1e-9,
                                                            nan_ok=True)  # fmt: skip


def test_overlaps_count_every_pair_once_across_slabs():
    rng = np.random.default_rng(7)
    gt, pred = blobs(rng, (37, 41)), blobs(rng, (37, 41), 0.45)
    table = overlaps(pred, gt)
    whole = contingency(pred, gt, 1 << 22)
    for slab in (1, 13):
        cut = contingency(pred, gt, slab)
        for field in ("true_id", "pred_id", "count"):
            np.testing.assert_array_equal(getattr(cut, field), getattr(whole, field))
    for k, (t, p) in enumerate(zip(table.true_index, table.pred_index, strict=True)):
        shared = np.count_nonzero((gt == t + 1) & (pred == p + 1))  # ids are 1..n here
        assert shared == table.intersection[k] > 0
    np.testing.assert_array_equal(table.true_area, np.bincount(gt.ravel())[1:])


def test_sparse_huge_ids_score_as_their_compact_numbering():
    rng = np.random.default_rng(3)
    gt, pred = blobs(rng, (30, 30)), blobs(rng, (30, 30), 0.45)
    huge = np.where(pred > 0, pred.astype(np.uint64) * (1 << 40) + (1 << 62), 0)
    for figure in (adapted_rand_error, variation_of_information):
        assert figure(contingency(huge, gt)) == figure(contingency(pred, gt))
    assert overlaps(huge, gt).intersection.tolist() == overlaps(pred, gt).intersection.tolist()


@pytest.mark.parametrize("instances", [False, True])
def test_evaluate_allocates_less_than_its_guard_counts(tmp_path, monkeypatch, instances):
    slab = 1 << 12  # small slabs, so the images, not one slab, are what is measured
    for module in (contingency_module, metrics_module, evaluate_module):
        monkeypatch.setattr(module, "SLAB_VOXELS", slab)
    rng = np.random.default_rng(0)
    shape = (400, 500)
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    truth, found = blobs(rng, shape), blobs(rng, shape, 0.45)
    tifffile.imwrite(tmp_path / "p" / "a_labels.tif", (found > 0).astype(np.uint8))
    tifffile.imwrite(tmp_path / "g" / "a.tif", (truth > 0).astype(np.uint8))
    paths = [tmp_path / "p" / "a_labels.tif", tmp_path / "g" / "a.tif"]
    extra = {}
    if instances:
        tifffile.imwrite(tmp_path / "p" / "a_instances.tif", found.astype(np.uint32))
        tifffile.imwrite(tmp_path / "g" / "a_objects.tif", truth.astype(np.uint32))
        paths += [tmp_path / "p" / "a_instances.tif", tmp_path / "g" / "a_objects.tif"]
        extra = {"pred_instance_suffix": "_instances", "gt_instance_suffix": "_objects"}
    cfg = config(pred_dir=tmp_path / "p", gt_dir=tmp_path / "g", gt_suffix="''", report=False,
                 progress=False, output_dir=tmp_path / "out", **extra)  # fmt: skip
    tracemalloc.start()
    try:
        summary = evaluate(cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary["evaluated"] == 1 and summary["files"][0]["segments"] == (
        "instances" if instances else "components"
    )
    voxels = shape[0] * shape[1]
    assert peak <= pair_bytes(paths, not instances) - slab * 48 + slab * 64
    assert peak / voxels < 20  # it was about 70 (components) and 85 (instances) bytes a voxel
