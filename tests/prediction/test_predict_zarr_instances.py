"""Block-wise ``seeded`` / ``distance`` instances of OME-Zarr inputs: equal to the file path's
whole-volume instances, tuned parameters honoured, an interrupted flood pass resumed."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.prediction.test_predict_zarr import SCALE, TINY_3D, config, make_input, save_checkpoint
from unet_seg.blockwise import instance_passes
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.io.zarr.output import write_zarr
from unet_seg.io.zarr.store import open_zarr
from unet_seg.prediction.batch import predict
from unet_seg.prediction.ownership import REGISTER_NAME
from unet_seg.tuning.write_back import store_tuning

# What unet-seg-tune would store: predict uses it for every instances.* left null.
TUNED = {"method": "seeded", "roles": {"background_class": 0, "interior_class": 1},
         "methods": {"seeded": {"foreground_threshold": 0.5, "seed_threshold": 0.6,
                                "min_size": 3}}}  # fmt: skip
WHOLE = {"instances.halo": 100}  # wider than the volume: blocks see whole components


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(1).integers(0, 4000, (13, 50, 45)).astype(np.uint16)


@pytest.fixture(scope="module")
def tuned_ckpt(tmp_path_factory):
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model3d.ckpt", TINY_3D, seed=0)
    store_tuning(path, TUNED)
    return path


def whole_volume_instances(tmp_path, data, ckpt, **overrides):
    """The file path's instances of the same voxels, its halo wider than the volume: one
    watershed over the whole volume (``tests/prediction/test_predict_instances.py`` holds the
    file path to the in-memory methods)."""
    write_volume(tmp_path / "ref" / "raw.tif", Volume(data, spacing=SCALE))
    cfg = config(input=tmp_path / "ref" / "raw.tif", output_dir=tmp_path / "ref", checkpoint=ckpt,
                 tile_size=16, **{"outputs.instances": "true", **WHOLE, **overrides})  # fmt: skip
    assert predict(cfg)["files"][0]["status"] == "ok"
    return read_volume(tmp_path / "ref" / "raw_instances.tif").array


def blocked_config(tmp_path, data, ckpt, **overrides):
    source = make_input(tmp_path, data)
    return config(input=source, output_dir=tmp_path / "out", checkpoint=ckpt, tile_size=16,
                  block_size="[8,16,32]", **{"outputs.instances": "true", **overrides})  # fmt: skip


def blocked_instances(tmp_path):
    return open_zarr(tmp_path / "out" / "raw_instances.ome.zarr")[...]


@pytest.fixture(scope="module")
def seeded_blocked(tmp_path_factory, data, tuned_ckpt):
    """``(summary entry, instances, output folder)`` of the tuned seeded run, block by block."""
    tmp = tmp_path_factory.mktemp("seeded")
    entry = predict(blocked_config(tmp, data, tuned_ckpt, **WHOLE))["files"][0]
    assert [p.name for p in (tmp / "out").glob(".*")] == [REGISTER_NAME]  # no scratch left
    return entry, blocked_instances(tmp), tmp / "out"


def test_seeded_from_tuned_checkpoint_equals_the_file_path(tmp_path, data, tuned_ckpt,
                                                           seeded_blocked):  # fmt: skip
    entry, out, out_dir = seeded_blocked
    assert entry["status"] == "ok" and entry["blocks"]["total"] == 2 * 4 * 2
    expected = whole_volume_instances(tmp_path, data, tuned_ckpt)
    assert entry["instances"] == expected.max() > 3
    np.testing.assert_array_equal(out, expected)
    # the objects' tables: measured over 16 blocks of the zarr store, and over the whole file
    blocked, whole = (table(d / "raw_objects.csv") for d in (out_dir, tmp_path / "ref"))
    assert blocked.keys() == whole.keys() and len(blocked["label"]) == expected.max()
    for column, values in whole.items():
        if column == "physical_size":  # the spacing, stored by TIFF and by OME-Zarr
            np.testing.assert_allclose(blocked[column], values, rtol=1e-6)
        else:
            np.testing.assert_array_equal(blocked[column], values, err_msg=column)
    np.testing.assert_array_equal(whole["voxels"], np.bincount(expected.ravel())[1:])


def table(path):
    """A ``_objects.csv`` as ``{column: float array}``."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return {name: np.array([float(r[k]) for r in rows[1:]]) for k, name in enumerate(rows[0])}


@pytest.mark.slow
def test_tuned_seed_threshold_is_used_block_wise(tmp_path, data, tuned_ckpt, seeded_blocked):
    default = {"instances.seed_threshold": 0.5}
    predict(blocked_config(tmp_path, data, tuned_ckpt, **WHOLE, **default))
    assert not np.array_equal(blocked_instances(tmp_path), seeded_blocked[1])


def test_distance_equals_the_file_path(tmp_path, data, tuned_ckpt):
    method = {"instances.method": "distance", "instances.min_distance": 2}
    entry = predict(blocked_config(tmp_path, data, tuned_ckpt, **WHOLE, **method))["files"][0]
    expected = whole_volume_instances(tmp_path, data, tuned_ckpt, **method)
    assert entry["status"] == "ok" and entry["instances"] == expected.max() > 3
    np.testing.assert_array_equal(blocked_instances(tmp_path), expected)


def test_interrupted_flood_pass_resumes_only_the_missing_blocks(
    tmp_path, data, tuned_ckpt, seeded_blocked, monkeypatch
):
    original, calls, failures = instance_passes.flood_block, [], []

    def failing(job, index):
        calls.append(index)
        if index == 5 and not failures:  # the first attempt only
            failures.append(index)
            raise RuntimeError("simulated worker failure")
        return original(job, index)

    monkeypatch.setattr(instance_passes, "flood_block", failing)
    cfg = blocked_config(tmp_path, data, tuned_ckpt, **WHOLE)
    entry = predict(cfg)["files"][0]
    assert entry["status"] == "failed" and "block 5 at (0, 2, 1)" in entry["error"]
    assert not (tmp_path / "out" / "raw_instances.ome.zarr").exists()
    calls.clear()
    entry = predict(cfg)["files"][0]
    assert entry["status"] == "ok" and calls == [5]  # the prediction and the other floods kept
    assert entry["blocks"] == {"total": 16, "computed": 0, "skipped": 16, "failed": 0}
    np.testing.assert_array_equal(blocked_instances(tmp_path), seeded_blocked[1])


def test_interrupted_relabel_pass_keeps_the_measured_blocks(
    tmp_path, data, tuned_ckpt, seeded_blocked, monkeypatch
):
    """The objects' table of a rerun after a failed relabel block: the blocks recorded before
    (with their measurements) are not redone, and the table is the uninterrupted run's."""
    original, calls, failures = instance_passes.relabel_block, [], []

    def failing(job, index):
        calls.append(index)
        if index == 9 and not failures:
            failures.append(index)
            raise RuntimeError("simulated worker failure")
        return original(job, index)

    monkeypatch.setattr(instance_passes, "relabel_block", failing)
    cfg = blocked_config(tmp_path, data, tuned_ckpt, **WHOLE)
    assert predict(cfg)["files"][0]["status"] == "failed"
    assert not list((tmp_path / "out").glob("*_objects.csv"))
    calls.clear()
    assert predict(cfg)["files"][0]["status"] == "ok" and calls == [9]
    resumed = table(tmp_path / "out" / "raw_objects.csv")
    uninterrupted = table(seeded_blocked[2] / "raw_objects.csv")
    assert resumed.keys() == uninterrupted.keys()
    for column, values in uninterrupted.items():
        np.testing.assert_array_equal(resumed[column], values, err_msg=column)


def test_seeded_2d_image_equals_the_file_path(tmp_path):
    """A 2D image (one slice for the tiling): maps and ids go through the (Y, X) file boxes."""
    model = {**TINY_3D, "spatial_dims": 2}
    ckpt = save_checkpoint(tmp_path / "model2d.ckpt", model, seed=3)
    image = np.random.default_rng(5).integers(0, 4000, (70, 61)).astype(np.uint16)
    seeded = {"instances.method": "seeded", "instances.seed_threshold": 0.6, "instances.halo": 100}
    write_zarr(tmp_path / "raw.zarr", image, chunks=(16, 16))
    outputs = {"outputs.instances": "true", **seeded}
    cfg = config(input=tmp_path / "raw.zarr", output_dir=tmp_path / "out", checkpoint=ckpt,
                 tile_size=32, block_size="[1,32,32]", **outputs)  # fmt: skip
    entry = predict(cfg)["files"][0]
    write_volume(tmp_path / "ref" / "raw.tif", Volume(image))
    ref = config(input=tmp_path / "ref" / "raw.tif", output_dir=tmp_path / "ref", checkpoint=ckpt,
                 tile_size=32, **outputs)  # fmt: skip
    predict(ref)
    expected = read_volume(tmp_path / "ref" / "raw_instances.tif").array
    assert entry["status"] == "ok" and entry["blocks"]["total"] == 6
    assert entry["instances"] == expected.max() > 3
    np.testing.assert_array_equal(open_zarr(tmp_path / "out" / "raw_instances.zarr")[...], expected)
