"""TIFF / NIfTI inputs through the block path: equal to the whole-volume prediction, instances
stitched exactly across blocks, nothing left behind, a preview for zarr inputs, and memory
bounded by a block rather than by the y-x plane."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi
from skimage.measure import regionprops

from tests.prediction.test_predict import TINY_2D, config, save_checkpoint, stack
from tests.prediction.test_predict_zarr import TINY_3D, make_input
from unet_seg.blockwise.plan import default_block_shape
from unet_seg.inference.runner import ModelRunner
from unet_seg.inference.stream import predict_tiled
from unet_seg.inference.tiling import plan_tiles
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.models.checkpoint import load_model
from unet_seg.normalization import normalize_percentile
from unet_seg.prediction.batch import predict
from unet_seg.prediction.driver import file_block_shape
from unet_seg.prediction.ownership import REGISTER_NAME


@pytest.fixture(scope="module")
def ckpt_2d(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model2d.ckpt", TINY_2D, seed=3)


def whole_volume(array: np.ndarray, ckpt: Path, tile_size: int) -> np.ndarray:
    """``(K, Z, Y, X)`` probabilities of one in-memory pass over the whole volume."""
    model, _ = load_model(ckpt)
    norm = normalize_percentile(array)[None]  # a small volume: predict reads it all too
    return predict_tiled(norm, model, ModelRunner(model, "cpu"), tile_size=tile_size)


def test_blocked_2d_stack_equals_the_whole_volume_pass(tmp_path, rng, ckpt_2d):
    array = stack(rng, (5, 50, 61))
    image = write_volume(tmp_path / "s.tif", Volume(array))
    summary = predict(config(input=image, output_dir=tmp_path / "out", checkpoint=ckpt_2d,
                             tile_size=24, block_size="[2,24,24]"))  # fmt: skip
    (entry,) = summary["files"]
    assert entry["status"] == "ok" and entry["blocks"]["total"] == 3 * 3 * 3
    probs = whole_volume(array, ckpt_2d, 24)
    np.testing.assert_array_equal(read_volume(tmp_path / "out" / "s_labels.tif").array,
                                  probs.argmax(0))  # fmt: skip


def test_blocked_same_padding_nifti_equals_the_whole_volume_pass(tmp_path, rng):
    ckpt = save_checkpoint(tmp_path / "m3.ckpt", TINY_3D, seed=0)
    array = stack(rng, (13, 40, 37))
    image = write_volume(tmp_path / "v.nii", Volume(array, spacing=(2.0, 1.0, 1.0)))
    summary = predict(config(input=image, output_dir=tmp_path / "out", checkpoint=ckpt,
                             tile_size=16, block_size="[8,16,16]", probability_dtype="float16",
                             **{"outputs.probabilities": True}))  # fmt: skip
    assert summary["files"][0]["blocks"]["total"] == 2 * 3 * 3
    probs = whole_volume(array, ckpt, 16)
    written = read_volume(tmp_path / "out" / "v_probs.nii").array  # float32: NIfTI has no f16
    assert written.dtype == np.float32 and np.abs(written - probs).max() < 1e-5
    labels = read_volume(tmp_path / "out" / "v_labels.nii")
    np.testing.assert_array_equal(labels.array, probs.argmax(0))
    assert labels.spacing == pytest.approx((2.0, 1.0, 1.0))


def test_cc_instances_stitched_across_blocks_equal_scipy_label(tmp_path, rng, ckpt_2d):
    image = write_volume(tmp_path / "s.tif", Volume(stack(rng, (6, 60, 70))))
    out = tmp_path / "out"
    summary = predict(config(input=image, output_dir=out, checkpoint=ckpt_2d, tile_size=16,
                             block_size="[2,16,16]", **{"outputs.instances": True,
                             "instances.method": "cc", "instances.min_size": 0,
                             "instances.foreground_class": 0}))  # fmt: skip
    (entry,) = summary["files"]
    labels = read_volume(out / "s_labels.tif").array
    # Class 0: this random network's class 1 is one object filling most of the stack.
    expected, count = ndi.label(labels == 0)
    instances = read_volume(out / "s_instances.tif").array
    np.testing.assert_array_equal(instances, expected)
    assert entry["instances"] == count and entry["blocks"]["total"] == 3 * 4 * 5
    # The comparison means something: objects that cross block faces.
    faces = [(instances[1], instances[2])]  # z
    faces += [(instances[:, y - 1], instances[:, y]) for y in (16, 32, 48)]
    faces += [(instances[:, :, x - 1], instances[:, :, x]) for x in (16, 32, 48, 64)]
    assert count > 100 and sum(int(((a == b) & (a > 0)).sum()) for a, b in faces) > 10
    # the objects' table, measured block by block: regionprops of the whole image
    with open(out / "s_objects.csv", newline="") as f:
        table = list(csv.DictReader(f))
    raw = read_volume(image).array
    props = regionprops(instances, intensity_image=raw)
    assert [int(r["label"]) for r in table] == [p.label for p in props]
    for row, prop in zip(table, props, strict=True):
        assert int(row["voxels"]) == prop.area
        centroid = [float(row[f"centroid_{a}"]) for a in "zyx"]
        assert centroid == pytest.approx(prop.centroid, rel=1e-12)
        starts = [int(row[f"bbox_{a}_start"]) for a in "zyx"]
        stops = [int(row[f"bbox_{a}_stop"]) for a in "zyx"]
        assert (*starts, *stops) == prop.bbox
        assert float(row["mean_intensity"]) == pytest.approx(prop.intensity_mean, rel=1e-12)


def test_instances_alone_leave_no_scratch_file(tmp_path, rng, ckpt_2d):
    image = write_volume(tmp_path / "in" / "s.tif", Volume(stack(rng, (4, 40, 44))))
    out = tmp_path / "out"
    summary = predict(config(input=image, output_dir=out, checkpoint=ckpt_2d, tile_size=16,
                             block_size="[2,16,16]", **{"outputs.labels": False,
                             "outputs.instances": True}))  # fmt: skip
    assert summary["ok"] == 1, summary["files"]
    assert sorted(p.name for p in out.iterdir()) == [
        REGISTER_NAME, "predict_summary.json", "s_instances.tif", "s_objects.csv", "s_preview.png"
    ]  # fmt: skip
    with Image.open(out / "s_preview.png") as png:  # image, labels (from scratch), instances
        assert png.size[1] > png.size[0] * 3 // 4 // 4 * 3


def test_objects_table_can_be_switched_off_and_needs_instances(tmp_path, rng, ckpt_2d):
    image = write_volume(tmp_path / "in" / "s.tif", Volume(stack(rng, (2, 30, 30))))
    for name, outputs in (("off", {"outputs.instances": True, "outputs.objects": False}),
                          ("alone", {"outputs.objects": True})):  # fmt: skip
        out = tmp_path / name
        summary = predict(config(input=image, output_dir=out, checkpoint=ckpt_2d, tile_size=16,
                                 **outputs))  # fmt: skip
        assert summary["ok"] == 1 and not list(out.glob("*_objects.csv"))


def test_zarr_input_gets_a_preview_and_is_skipped_when_complete(tmp_path):
    ckpt = save_checkpoint(tmp_path / "m3.ckpt", TINY_3D, seed=0)
    data = np.random.default_rng(1).integers(0, 4000, (13, 40, 37)).astype(np.uint16)
    source = make_input(tmp_path, data)
    cfg = config(input=source, output_dir=tmp_path / "out", checkpoint=ckpt, tile_size=16,
                 block_size="[8,16,16]")  # fmt: skip
    (entry,) = predict(cfg)["files"]
    assert entry["status"] == "ok" and entry["preview"] == str(tmp_path / "out/raw_preview.png")
    with Image.open(tmp_path / "out" / "raw_preview.png") as png:
        assert png.format == "PNG"
    assert predict(cfg)["skipped"] == 1
    # Without the labels there is no preview (it reads their store), and nothing to redo.
    cfg = config(input=source, output_dir=tmp_path / "inst", checkpoint=ckpt, tile_size=16,
                 **{"outputs.labels": False, "outputs.instances": True})  # fmt: skip
    assert "preview" not in predict(cfg)["files"][0]
    assert predict(cfg)["skipped"] == 1


def _peak_rss_mib(image: Path, ckpt: Path, out: Path) -> float:
    """Peak RSS of a fresh process predicting ``image`` (labels and probabilities)."""
    code = (
        "import json, sys\n"
        "from tests.prediction.test_predict import config\n"
        "from unet_seg.prediction.batch import predict\n"
        "from unet_seg.peak_memory import peak_rss_mib\n"
        f"s = predict(config(input={str(image)!r}, output_dir={str(out)!r}, "
        f"checkpoint={str(ckpt)!r}, **{{'outputs.probabilities': True}}))\n"
        "assert s['ok'] == 1, s['files']\n"
        "print(json.dumps(peak_rss_mib()))\n"
    )
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                         timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    return float(run.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_3072_plane_takes_about_the_memory_of_a_1024_plane(tmp_path, ckpt_2d):
    # The same voxels (9 slices of 1024^2, one of 3072^2): only the plane differs.
    rng = np.random.default_rng(0)
    peaks = {}
    for size, depth in ((1024, 9), (3072, 1)):
        image = write_volume(tmp_path / f"p{size}.tif", Volume(stack(rng, (depth, size, size))))
        peaks[size] = _peak_rss_mib(image, ckpt_2d, tmp_path / f"out{size}")
    assert peaks[3072] <= 1.2 * peaks[1024], peaks


def test_file_blocks_fill_a_batch_and_keep_the_plane_to_a_few_windows(ckpt_2d):
    model, _ = load_model(ckpt_2d)
    small = plan_tiles(model, (300, 40, 44), 64)  # one window per slice
    assert file_block_shape(small, 4) == (4, 40, 44)  # 4 slices: one batch of 4 windows
    big = plan_tiles(model, (3, 3000, 3000), 64)
    depth, height, width = file_block_shape(big, 4)
    assert depth == 1 and height == width < 3000  # the plane cut to a few windows per axis
    assert height == width == default_block_shape(big, (1, 1, 1))[1]
