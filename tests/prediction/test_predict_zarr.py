"""Block-wise prediction of OME-Zarr inputs: equals the TIFF path, resumes, reports failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from scipy import ndimage as ndi

from tests.prediction.test_predict import save_checkpoint
from unet_seg.blockwise import task
from unet_seg.config import config_dir
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.io.zarr.output import write_zarr
from unet_seg.io.zarr.store import open_zarr
from unet_seg.prediction.batch import predict
from unet_seg.prediction.ownership import REGISTER_NAME

TINY_3D = {"spatial_dims": 3, "in_channels": 1, "num_classes": 2, "features": [4, 8],
           "padding": "same", "norm": None, "dropout": 0.0}  # fmt: skip
SCALE = (2.0, 0.5, 0.5)


@pytest.fixture(scope="module")
def ckpt_3d(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model3d.ckpt", TINY_3D, seed=0)


@pytest.fixture(scope="module")
def volume_data():
    return np.random.default_rng(1).integers(0, 4000, (13, 70, 61)).astype(np.uint16)


def make_input(tmp_path, data, version="0.5"):
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    ome = {"version": version, "axes": axes, "scale": SCALE, "name": "raw"}
    return write_zarr(tmp_path / "raw.ome.zarr", data, chunks=(8, 16, 16), ome=ome)


def config(**overrides):
    args = [f"{k}={v}" for k, v in overrides.items()]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("predict", overrides=[*args, "progress=false"])


def predict_reference(tmp_path, data, ckpt):
    """Today's single-process path on the same voxels, as a TIFF."""
    write_volume(tmp_path / "ref" / "raw.tif", Volume(data, spacing=SCALE))
    predict(config(input=tmp_path / "ref" / "raw.tif", output_dir=tmp_path / "ref",
                   checkpoint=ckpt, tile_size=16, **{"outputs.probabilities": "true",
                   "probability_dtype": "float16"}))  # fmt: skip
    return (read_volume(tmp_path / "ref" / "raw_labels.tif").array,
            read_volume(tmp_path / "ref" / "raw_probs.tif").array)  # fmt: skip


def test_ome_zarr_blocks_in_process_equal_the_tiff_path(tmp_path, ckpt_3d, volume_data):
    source = make_input(tmp_path, volume_data)
    cfg = config(input=source, output_dir=tmp_path / "out", checkpoint=ckpt_3d, tile_size=16,
                 block_size="[8,32,32]", probability_dtype="float16",
                 **{"outputs.probabilities": "true"})  # fmt: skip
    summary = predict(cfg)
    entry = summary["files"][0]
    assert entry["status"] == "ok" and entry["blocks"] == {
        "total": 2 * 3 * 2, "computed": 12, "skipped": 0, "failed": 0,
    }  # fmt: skip
    labels = open_zarr(tmp_path / "out" / "raw_labels.ome.zarr")
    assert labels.spacing == SCALE and labels.metadata["unit"] == "um"
    assert labels.chunks == (8, 16, 16)
    ref_labels, ref_probs = predict_reference(tmp_path, volume_data, ckpt_3d)
    np.testing.assert_array_equal(labels[...], ref_labels)
    probs = open_zarr(tmp_path / "out" / "raw_probs.ome.zarr")
    assert probs.metadata["axes"] == "CZYX"
    np.testing.assert_allclose(probs[...].astype(np.float32), ref_probs.astype(np.float32),
                               atol=1e-3)  # float16 storage  # fmt: skip
    written = json.loads((tmp_path / "out" / "predict_summary.json").read_text())
    assert written["files"][0]["blocks"]["total"] == 12


def write_ome_zarr_py(path, data, axes):
    """An OME-Zarr as ome-zarr-py writes it (its own pyramid; scale 1 at full resolution)."""
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    write_image(data, zarr.group(store=parse_url(str(path), mode="w").store), axes=axes)
    return path


def test_grey_ome_zarr_with_t_and_c_axes_of_one_equals_plain_zyx(tmp_path, ckpt_3d, volume_data):
    """bioformats2raw and most converters write 5D ``tczyx`` even for one grey channel."""
    five = write_ome_zarr_py(tmp_path / "five.ome.zarr", volume_data[None, None], "tczyx")
    plain = make_input(tmp_path, volume_data)
    for source in (five, plain):
        summary = predict(config(input=source, output_dir=tmp_path / "out", checkpoint=ckpt_3d,
                                 tile_size=16, block_size="[8,32,32]"))  # fmt: skip
        assert summary["files"][0]["status"] == "ok", summary
    labels = open_zarr(tmp_path / "out" / "five_labels.ome.zarr")
    assert labels.shape == volume_data.shape and labels.metadata["axes"] == "ZYX"
    expected = open_zarr(tmp_path / "out" / "raw_labels.ome.zarr")[...]
    np.testing.assert_array_equal(labels[...], expected)

    two = write_ome_zarr_py(tmp_path / "two.ome.zarr", np.stack([volume_data] * 2), "czyx")
    summary = predict(config(input=two, output_dir=tmp_path / "out", checkpoint=ckpt_3d,
                             tile_size=16))  # fmt: skip
    assert summary["files"][0]["status"] == "failed"
    assert "2 separate channels" in summary["files"][0]["error"]


def test_channel_of_an_ome_zarr_equals_that_channel_alone(tmp_path, ckpt_3d, volume_data):
    """Block by block, ``channel=1`` reads (and normalises) channel 1 only."""
    other = volume_data[:, ::-1] // 3  # other voxels and another intensity range
    axes = [{"name": "c", "type": "channel"}] + [{"name": n, "type": "space"} for n in "zyx"]
    ome = {"version": "0.5", "axes": axes, "scale": (1.0, *SCALE), "name": "two"}
    two = write_zarr(tmp_path / "two.ome.zarr", np.stack([volume_data, other]),
                     chunks=(1, 8, 16, 16), ome=ome)  # fmt: skip
    alone = write_zarr(tmp_path / "alone.ome.zarr", other, chunks=(8, 16, 16),
                       ome={**ome, "axes": axes[1:], "scale": SCALE})  # fmt: skip
    for source, channel in ((two, 1), (alone, None)):
        summary = predict(config(input=source, output_dir=tmp_path / "out", checkpoint=ckpt_3d,
                                 tile_size=16, block_size="[8,32,32]",
                                 channel="null" if channel is None else channel))  # fmt: skip
        assert summary["files"][0]["status"] == "ok", summary
        assert summary["files"][0]["blocks"]["total"] > 1
    picked = open_zarr(tmp_path / "out" / "two_labels.ome.zarr")[...]
    assert picked.shape == volume_data.shape
    alone_labels = open_zarr(tmp_path / "out" / "alone_labels.ome.zarr")[...]
    np.testing.assert_array_equal(picked, alone_labels)


def test_failed_block_is_reported_and_a_rerun_computes_only_the_rest(
    tmp_path, ckpt_3d, volume_data, monkeypatch
):
    source = make_input(tmp_path, volume_data, version="0.4")
    cfg = config(input=source, output_dir=tmp_path / "out", checkpoint=ckpt_3d, tile_size=16,
                 block_size="[8,32,32]")  # fmt: skip
    original = task.predict_block

    def failing(read, blocks, block, *args):
        if block.index == 4:
            raise RuntimeError("simulated worker failure")
        return original(read, blocks, block, *args)

    monkeypatch.setattr(task, "predict_block", failing)
    entry = predict(cfg)["files"][0]
    assert entry["status"] == "failed" and "block 4 at (0, 2, 0)" in entry["error"]
    assert entry["blocks"] == {"total": 12, "computed": 11, "skipped": 0, "failed": 1}
    assert not (tmp_path / "out" / "raw_labels.ome.zarr").exists()  # nothing half-written

    monkeypatch.setattr(task, "predict_block", original)
    entry = predict(cfg)["files"][0]
    assert entry["status"] == "ok"
    assert entry["blocks"] == {"total": 12, "computed": 1, "skipped": 11, "failed": 0}
    ref_labels, _ = predict_reference(tmp_path, volume_data, ckpt_3d)
    np.testing.assert_array_equal(open_zarr(tmp_path / "out" / "raw_labels.ome.zarr")[...],
                                  ref_labels)  # fmt: skip


def test_block_instances_equal_scipy_label_of_the_whole_label_map(tmp_path, ckpt_3d, volume_data):
    source = make_input(tmp_path, volume_data)
    cfg = config(input=source, output_dir=tmp_path / "out", checkpoint=ckpt_3d, tile_size=16,
                 block_size="[8,32,32]", **{"outputs.instances": "true", "instances.method": "cc",
                 "instances.min_size": 0})  # fmt: skip
    entry = predict(cfg)["files"][0]
    assert entry["status"] == "ok"
    labels = open_zarr(tmp_path / "out" / "raw_labels.ome.zarr")[...]
    instances = open_zarr(tmp_path / "out" / "raw_instances.ome.zarr")
    expected, count = ndi.label(labels == 1)
    assert count > 3 and entry["instances"] == count and instances.spacing == SCALE
    np.testing.assert_array_equal(instances[...], expected)
    assert [p.name for p in (tmp_path / "out").glob(".*")] == [REGISTER_NAME]  # no scratch left


def test_labels_into_the_input_labels_group_read_by_ome_zarr_py(tmp_path, ckpt_3d, volume_data):
    source = make_input(tmp_path, volume_data, version="0.4")
    cfg = config(input=source, output_dir=tmp_path / "out", checkpoint=ckpt_3d, tile_size=16,
                 **{"outputs.into_input": "true"})  # fmt: skip
    assert predict(cfg)["files"][0]["status"] == "ok"
    labels = open_zarr(source / "labels" / "unet-seg")
    assert labels.spacing == SCALE and labels.shape == volume_data.shape
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(source)))())  # the community reader finds the labels
    assert any("labels/unet-seg [zgroup]" in str(n.zarr) for n in nodes), nodes
    assert predict(cfg)["files"][0]["status"] == "skipped"  # already there: not redone


def test_foreground_mask_at_low_resolution_skips_empty_blocks(tmp_path, ckpt_3d, volume_data):
    source = make_input(tmp_path, volume_data)
    mask = np.zeros((4, 7, 6), np.uint8)  # about 1/3 of the resolution
    mask[0, 0, 0] = 1  # foreground only near the origin: the first block
    write_volume(tmp_path / "mask.tif", mask)
    cfg = config(input=source, output_dir=tmp_path / "out", checkpoint=ckpt_3d, tile_size=16,
                 block_size="[8,32,32]", **{"mask.path": tmp_path / "mask.tif"})  # fmt: skip
    entry = predict(cfg)["files"][0]
    assert entry["blocks"] == {"total": 12, "computed": 1, "skipped": 11, "failed": 0}
    labels = open_zarr(tmp_path / "out" / "raw_labels.ome.zarr")[...]
    ref_labels, _ = predict_reference(tmp_path, volume_data, ckpt_3d)
    np.testing.assert_array_equal(labels[:8, :32, :32], ref_labels[:8, :32, :32])
    assert labels[8:].max() == 0 and labels[:, 32:].max() == 0
