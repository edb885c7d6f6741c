"""Predicting with an ensemble: identical checkpoints equal one, in files and block-wise on zarr
(in-process and on Dask); the checkpoints used are recorded; mismatched members refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.prediction.test_predict import TINY_2D, config, save_checkpoint
from tests.prediction.test_predict_zarr import make_input
from unet_seg.errors import UsageError
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.io.zarr.store import open_zarr
from unet_seg.prediction.batch import predict


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt", TINY_2D, seed=4)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, ckpt):
    """Three folds that are one model: ``fold_k/model.ckpt`` copies of ``ckpt``."""
    root = tmp_path_factory.mktemp("folds")
    for k in range(3):
        (root / f"fold_{k}").mkdir()
        (root / f"fold_{k}" / "model.ckpt").write_bytes(ckpt.read_bytes())
    return root


def _stack():
    return np.random.default_rng(2).integers(0, 4000, (2, 44, 41)).astype(np.uint16)


def run(tmp_path, checkpoint, source, **overrides):
    cfg = config(input=source, output_dir=tmp_path, checkpoint=checkpoint, tile_size=24,
                 probability_dtype="float16", **{"outputs.probabilities": "true",
                 "outputs.preview": "false"}, **overrides)  # fmt: skip
    return predict(cfg)


def test_identical_checkpoints_equal_one_on_files(tmp_path, ckpt, model_folder):
    source = tmp_path / "in" / "stack.nii"  # NIfTI keeps float32 probabilities
    write_volume(source, Volume(_stack()))
    single = run(tmp_path / "one", ckpt, source)
    folder = run(tmp_path / "folder", model_folder, source)
    listed = run(tmp_path / "list", f"['{ckpt}','{ckpt}']", source)
    assert single["checkpoint"] == str(ckpt)
    folds = [str(model_folder / f"fold_{k}" / "model.ckpt") for k in range(3)]
    assert folder["checkpoint"] == folds
    assert listed["checkpoint"] == [str(ckpt)] * 2
    written = json.loads((tmp_path / "folder" / "predict_summary.json").read_text())
    assert written["checkpoint"] == folder["checkpoint"]
    ref_labels = read_volume(tmp_path / "one" / "stack_labels.nii").array
    ref_probs = read_volume(tmp_path / "one" / "stack_probs.nii").array
    assert ref_probs.dtype == np.float32 and 0 < ref_labels.mean() < 1
    for name in ("folder", "list"):
        np.testing.assert_array_equal(read_volume(tmp_path / name / "stack_labels.nii").array,
                                      ref_labels)  # fmt: skip
        probs = read_volume(tmp_path / name / "stack_probs.nii").array
        np.testing.assert_allclose(probs, ref_probs, atol=1e-6, rtol=0)


def test_identical_checkpoints_equal_one_block_wise(tmp_path, ckpt, model_folder):
    source = make_input(tmp_path, _stack())
    run(tmp_path / "one", ckpt, source, block_size="[1,32,32]")
    entry = run(tmp_path / "folder", model_folder, source, block_size="[1,32,32]")["files"][0]
    assert entry["status"] == "ok" and entry["blocks"]["computed"] == 4  # 2 x 2 blocks in plane
    for kind in ("labels", "probs"):
        one = open_zarr(tmp_path / "one" / f"raw_{kind}.ome.zarr")[...]
        many = open_zarr(tmp_path / "folder" / f"raw_{kind}.ome.zarr")[...]
        # float16 storage: one rounding step at most where the float32 values differ by 1e-7
        np.testing.assert_allclose(many.astype(np.float32), one.astype(np.float32), atol=1e-3)
        if kind == "labels":
            np.testing.assert_array_equal(many, one)


def test_a_rerun_with_another_ensemble_predicts_again(tmp_path, ckpt, model_folder):
    source = tmp_path / "in" / "stack.tif"
    write_volume(source, Volume(_stack()[:1]))
    assert run(tmp_path / "out", model_folder, source)["ok"] == 1
    assert run(tmp_path / "out", model_folder, source)["skipped"] == 1
    assert run(tmp_path / "out", f"['{ckpt}','{ckpt}']", source)["ok"] == 1


def test_mismatched_members_are_refused_before_any_file(tmp_path, ckpt):
    other = save_checkpoint(tmp_path / "other.ckpt", {**TINY_2D, "num_classes": 3}, seed=0)
    source = tmp_path / "in" / "stack.tif"
    write_volume(source, Volume(_stack()[:1]))
    with pytest.raises(UsageError, match=f"{ckpt} and {other} cannot be ensembled"):
        run(tmp_path / "out", f"['{ckpt}','{other}']", source)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a Dask LocalCluster start and two predictions, ~15 s on 2 busy cores
def test_identical_checkpoints_equal_one_on_dask(tmp_path, ckpt, model_folder):
    distributed = pytest.importorskip("distributed")
    source = make_input(tmp_path, _stack())
    run(tmp_path / "one", ckpt, source, block_size="[1,32,32]")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:  # fmt: skip
        address = {"cluster.address": cluster.scheduler_address}
        entry = run(tmp_path / "dask", model_folder, source, block_size="[1,32,32]",
                    cluster="address", **address)  # fmt: skip
    assert entry["files"][0]["status"] == "ok"
    one = open_zarr(tmp_path / "one" / "raw_labels.ome.zarr")[...]
    np.testing.assert_array_equal(open_zarr(tmp_path / "dask" / "raw_labels.ome.zarr")[...], one)
